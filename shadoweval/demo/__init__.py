"""The one-command demo: traffic generator, local alert receiver, orchestration."""
