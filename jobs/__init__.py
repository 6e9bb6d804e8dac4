"""Periodic jobs of `shadoweval worker`, shipped as `shadoweval.jobs`.

Each job opens a session scope and calls one service.
"""
