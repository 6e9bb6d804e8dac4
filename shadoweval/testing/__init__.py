"""Test and benchmark helpers shipped with the package: a fake provider speaking the real APIs."""
