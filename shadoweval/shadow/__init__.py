"""Shadow runs: re-running sampled requests on the other tier, as leased work items."""
