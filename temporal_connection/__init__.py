"""How every engine process talks to Temporal: one way to connect, one data converter.

- `connection`: `connect_temporal` (namespace, TLS, API key) and `data_converter` (pydantic
  payloads, failures encoded, payloads encrypted when `TEMPORAL_PAYLOAD_KEYS` is set).
- `codec`: `EncryptionCodec`, the AES-256-GCM payload codec, and its wire format.

It imports Temporal, cryptography and `config`; nothing else of the engine. What the engine does
through a connection (start, activate, retry a fulfillment) is `usecases`.
"""
