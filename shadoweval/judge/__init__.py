"""The pairwise LLM judge: prompts, verdict parsing, both orders, labels."""
