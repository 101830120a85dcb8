"""Machinery shared by every emulator: the app shell, control API, faults, request log, state file.

An emulator subclasses `emulator.Emulator`, builds its protocol routes, and hands both to
`app.create_emulator_app`; `server.ThreadedServer` runs the result in tests and `server.serve`
runs it from the command line. Nothing here knows any outside system's protocol.
"""
