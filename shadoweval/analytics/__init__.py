"""Analytics: the read API over shadow runs, verdicts, spend and judge quality."""
