"""Sampling: which decisions are shadow-evaluated, with what inclusion probability π."""
