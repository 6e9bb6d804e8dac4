"""Providers: one protocol over the Anthropic and OpenAI SDKs, pricing, the demo simulation."""
