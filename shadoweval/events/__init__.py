"""Events: things that happened and matter to people (budget exhausted, judge or model changed)."""
