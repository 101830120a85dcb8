"""Wire definitions shared by the engine's clients and the emulators that stand in for the
outside systems: what both ends of a protocol must agree on, and nothing else (no I/O, no logic).
"""
