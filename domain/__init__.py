"""The engine's one vocabulary: the types every room speaks and the business rules.

Pydantic models and plain functions only. Nothing here performs I/O, imports Temporal or a
client, or knows a wire format: `clients/` translate each outside system's wire into these
types and back, the workflow imports them freely (they are deterministic), and the listener and
the API speak them too. import-linter keeps it that way.

- `errors`: the closed `ErrorCode` list, the error kinds, `Failure`, `OrderRejected`.
- `order`: the Salesforce order snapshot the workflow works from.
- `billing`: the WHMCS order the engine creates, and its result.
- `sim`: SIM requests and activation states.
- `fulfillment`: the workflow's input, steps, progress and result.
- `messages`: the names of the workflow's query, updates and signals.
- `rules`: the business rules (what can be fulfilled, what needs a SIM, how items map to WHMCS).
"""
