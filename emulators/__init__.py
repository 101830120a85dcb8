"""Local stand-ins for Salesforce, WHMCS and Freebit at their real wire protocols.

Nothing here imports the engine, and the engine imports nothing from here: an emulator that
shared code with its client would agree with the client instead of with the real system.
"""
