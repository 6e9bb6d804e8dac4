"""API keys: hashed storage, scopes, and the scope check routes depend on."""
