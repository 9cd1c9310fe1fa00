"""Caller authentication: one verifier per mechanism."""
