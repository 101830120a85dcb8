"""The committed Pub/Sub stubs are what the `.proto` compiles to, and the `.proto` is
Salesforce's published interface (package, service, message names and field numbers)."""

from __future__ import annotations

from pathlib import Path

from wire.pubsub import pubsub_api_pb2
from wire.pubsub.__main__ import GENERATED, PACKAGE, generate


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    stale = [
        name
        for name in GENERATED
        if (tmp_path / "wire" / "pubsub" / name).read_bytes() != (PACKAGE / name).read_bytes()
    ]
    assert not stale, f"run `python -m wire.pubsub` and commit: {stale} differ from the .proto"


def test_the_service_is_salesforces_eventbus_v1_pubsub() -> None:
    service = pubsub_api_pb2.DESCRIPTOR.services_by_name["PubSub"]
    assert service.full_name == "eventbus.v1.PubSub"
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Subscribe": (True, True),
        "GetSchema": (False, False),
        "GetTopic": (False, False),
        "Publish": (False, False),
        "PublishStream": (True, True),
    }


def test_field_numbers_are_salesforces() -> None:
    def numbers(message: str) -> dict[str, int]:
        descriptor = pubsub_api_pb2.DESCRIPTOR.message_types_by_name[message]
        return {field.name: field.number for field in descriptor.fields}

    assert numbers("FetchRequest") == {
        "topic_name": 1,
        "replay_preset": 2,
        "replay_id": 3,
        "num_requested": 4,
        "auth_refresh": 5,
    }
    assert numbers("FetchResponse") == {
        "events": 1,
        "latest_replay_id": 2,
        "rpc_id": 3,
        "pending_num_requested": 4,
    }
    assert numbers("ConsumerEvent") == {"event": 1, "replay_id": 2}
    assert numbers("ProducerEvent") == {"id": 1, "schema_id": 2, "payload": 3, "headers": 4}
    assert numbers("TopicInfo") == {
        "topic_name": 1,
        "tenant_guid": 2,
        "can_publish": 3,
        "can_subscribe": 4,
        "schema_id": 5,
        "rpc_id": 6,
    }
    assert numbers("SchemaInfo") == {"schema_json": 1, "schema_id": 2, "rpc_id": 3}
    presets = pubsub_api_pb2.DESCRIPTOR.enum_types_by_name["ReplayPreset"]
    assert {v.name: v.number for v in presets.values} == {"LATEST": 0, "EARLIEST": 1, "CUSTOM": 2}
