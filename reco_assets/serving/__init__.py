"""Serving the gold tables: the read queries (shared with the CLI), the API's in-memory serving copy, and the HTTP
API itself (`reco-assets serve`)."""
