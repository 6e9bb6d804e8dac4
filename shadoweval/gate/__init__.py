"""Release gate: replay stored requests on a candidate, judge pairwise, test non-inferiority."""
