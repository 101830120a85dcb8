"""Generators of the parts of `docs/` that the code holds (dev-time only, not installed)."""
