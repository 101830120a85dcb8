"""The /__emulator__ control API, driven over HTTP against a toy emulator."""

from __future__ import annotations

import time

import httpx


def add(client: httpx.Client, text: str = "x") -> httpx.Response:
    return client.post("/api", data={"action": "add", "text": text})


def test_fail_next_n_calls_then_recovers(notes: httpx.Client) -> None:
    rule = notes.post("/__emulator__/faults", json={"kind": "fail", "count": 2, "status": 503})
    assert rule.status_code == 201
    assert [add(notes).status_code for _ in range(3)] == [503, 503, 200]
    assert notes.get("/__emulator__/faults").json() == {"faults": []}


def test_failure_carries_the_configured_json_or_text_body(notes: httpx.Client) -> None:
    body = {"result": "error", "message": "Database busy"}
    notes.post(
        "/__emulator__/faults", json={"kind": "fail", "count": 1, "status": 200, "body": body}
    )
    notes.post(
        "/__emulator__/faults", json={"kind": "fail", "count": 1, "status": 502, "body": "bad"}
    )
    first, second = add(notes), add(notes)
    assert (first.status_code, first.json()) == (200, body)
    assert (second.status_code, second.text) == (502, "bad")


def test_fault_matches_only_its_action_and_path(notes: httpx.Client) -> None:
    notes.post("/__emulator__/faults", json={"kind": "fail", "count": 1, "action": "token"})
    notes.post("/__emulator__/faults", json={"kind": "fail", "count": 1, "path": "/notes"})
    assert add(notes).status_code == 200
    assert notes.post("/api", data={"action": "token"}).status_code == 503
    assert notes.get("/notes").status_code == 503
    assert notes.get("/notes").status_code == 200


def test_fraction_of_calls_fails_repeatably_under_a_seed(notes: httpx.Client) -> None:
    def run() -> list[int]:
        notes.post("/__emulator__/reset", json={"seed": 7})
        notes.post("/__emulator__/faults", json={"kind": "fail", "rate": 0.5, "status": 500})
        return [add(notes).status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert 500 in first and 200 in first


def test_latency_rule_delays_matching_calls_only(notes: httpx.Client) -> None:
    notes.post("/__emulator__/faults", json={"kind": "latency", "ms": 300, "path": "/notes"})
    started = time.monotonic()
    add(notes)
    assert time.monotonic() - started < 0.25
    started = time.monotonic()
    assert notes.get("/notes").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_faults_are_listed_and_cleared(notes: httpx.Client) -> None:
    notes.post("/__emulator__/faults", json={"kind": "fail", "rate": 1, "status": 500})
    listed = notes.get("/__emulator__/faults").json()["faults"]
    assert [(f["kind"], f["rate"], f["status"]) for f in listed] == [("fail", 1.0, 500)]
    assert notes.delete("/__emulator__/faults").status_code == 200
    assert add(notes).status_code == 200


def test_control_api_is_never_faulted(notes: httpx.Client) -> None:
    notes.post("/__emulator__/faults", json={"kind": "fail", "rate": 1})
    assert notes.get("/__emulator__/state").status_code == 200


def test_invalid_fault_rule_is_refused(notes: httpx.Client) -> None:
    reply = notes.post("/__emulator__/faults", json={"kind": "fail"})
    assert reply.status_code == 400
    assert "count" in reply.json()["error"]
    assert notes.post("/__emulator__/faults", json={"kind": "explode"}).status_code == 400


def test_request_log_counts_round_trips_including_failures(notes: httpx.Client) -> None:
    notes.post("/__emulator__/faults", json={"kind": "fail", "count": 1, "status": 503})
    add(notes)
    add(notes)
    notes.get("/notes")
    log = notes.get("/__emulator__/requests", params={"action": "add"}).json()
    assert log["count"] == 2
    assert [r["status"] for r in log["requests"]] == [503, 200]
    assert all(r["path"] == "/api" and r["method"] == "POST" for r in log["requests"])
    assert notes.get("/__emulator__/requests").json()["count"] == 3
    notes.delete("/__emulator__/requests")
    assert notes.get("/__emulator__/requests").json()["count"] == 0


def test_seed_demo_returns_ids_and_state_shows_them(notes: httpx.Client) -> None:
    created = notes.post("/__emulator__/seed", json={"dataset": "demo"}).json()
    state = notes.get("/__emulator__/state").json()
    assert sorted(state["notes"]) == sorted(created["ids"])
    assert notes.post("/__emulator__/seed", json={"nonsense": 1}).status_code == 400


def test_reset_with_seed_gives_the_same_ids_again(notes: httpx.Client) -> None:
    notes.post("/__emulator__/reset", json={"seed": 42})
    first = add(notes).json()["id"]
    notes.post("/__emulator__/reset", json={"seed": 42})
    assert notes.get("/__emulator__/state").json()["notes"] == {}
    assert add(notes).json()["id"] == first


def test_state_can_be_put_back(notes: httpx.Client) -> None:
    add(notes, "kept")
    saved = notes.get("/__emulator__/state").json()
    notes.post("/__emulator__/reset")
    assert notes.put("/__emulator__/state", json=saved).status_code == 200
    assert list(notes.get("/notes").json().values()) == ["kept"]


def test_expire_tokens_invalidates_issued_tokens(notes: httpx.Client) -> None:
    token = notes.post("/api", data={"action": "token"}).json()["token"]
    assert notes.post("/api", data={"action": "whoami", "token": token}).status_code == 200
    assert notes.post("/__emulator__/tokens/expire").json() == {"expired": 1}
    assert notes.post("/api", data={"action": "whoami", "token": token}).status_code == 401


def test_sessions_drop_reports_dropped_sessions(notes: httpx.Client) -> None:
    notes.post("/api", data={"action": "token"})
    assert notes.post("/__emulator__/sessions/drop").json() == {"dropped": 1}
    assert notes.post("/__emulator__/sessions/drop").json() == {"dropped": 0}


def test_config_of_an_emulator_without_settings_refuses_changes(notes: httpx.Client) -> None:
    assert notes.get("/__emulator__/config").json() == {}
    assert notes.post("/__emulator__/config", json={"x": 1}).status_code == 400
