"""Benchmarks (`shadoweval bench …`); never run in CI."""
