"""Temporal activities: thin adapters that call `clients/` and translate their errors."""
