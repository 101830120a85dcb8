"""Temporal workflows: orchestration only, deterministic and free of I/O."""
