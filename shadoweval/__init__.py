"""shadoweval: shadow evaluation and monitoring for LLM model routers."""

__version__ = "0.1.0"
