"""Salesforce's Pub/Sub API (gRPC), from its published interface: `pubsub_api.proto` and the
stubs generated from it.

The stubs are committed so that an install needs no code generator; `python -m wire.pubsub`
writes them again, and a test fails when they no longer match the `.proto`.
"""
