"""Credential exchange: one exchanger per mechanism, behind a shared cache."""
