"""Providers: one small protocol over the Anthropic and OpenAI SDKs, pricing, and the demo's simulation."""
