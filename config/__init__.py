"""Settings and logging. Imported by everyone; imports nothing of the engine."""
