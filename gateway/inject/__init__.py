"""Credential injection: one injector per mechanism."""
