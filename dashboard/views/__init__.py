"""Dashboard pages, one per question an ML owner asks."""
