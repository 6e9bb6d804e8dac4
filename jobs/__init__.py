"""Periodic jobs of `shadoweval worker` (shipped as `shadoweval.jobs`): each opens a session scope and calls one service."""
