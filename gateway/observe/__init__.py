"""Metrics and the audit trail."""
