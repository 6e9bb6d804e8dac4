"""Alerts: rules over the analytics, a firing/resolved lifecycle, delivery through an outbox."""
