"""Candidate pool per router, model events, the retrain trigger and the training export."""
