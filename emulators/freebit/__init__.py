"""Freebit emulator: the `/emptool/api/` MVNO API (auth keys, line and eSIM activation, plans).

Modules: `emulator` (state, result codes, the operations), `app` (HTTP door: one `json` form
field per POST), `demo` (the demo dataset). Imports nothing of the engine.
"""
