"""What the engine does for whoever asks: the listener, the API, the CLI and reconciliation share
these, and none of them is written twice.

- `fulfillments`: start an order's fulfillment, start it unless Temporal knows it, carry out an
  activation.
- `operator_actions`: an operator's retry or cancel of a parked fulfillment, audited.
- `read_model`: the fulfillments as the portal and the operators read them.
- `caches`: flush the portal's caches.
- `dead_letters`: list and redrive the change events the listener could not read.
- `reconciliation`: start the fulfillments that are missing, saying why the rest is left.
- `errors`: what a use case refuses with (`NotFoundError`, `ConflictError`, ...); the API maps
  each to an HTTP status in one place (`api.errors`), the CLI to an exit status.

Nothing here knows HTTP or a command line: no FastAPI, Starlette, uvicorn or argparse, and
nothing of `api` or `cli` (import-linter keeps it that way).
"""
