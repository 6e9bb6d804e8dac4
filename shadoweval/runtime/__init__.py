"""Worker runtime: leased work items, leader election, heartbeats."""
