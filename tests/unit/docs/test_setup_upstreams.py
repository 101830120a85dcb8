"""docs/setup-upstreams.md's generated blocks are what the code says now."""

from __future__ import annotations

from docs_gen.upstreams import BLOCKS, PAGE, regenerate, unplaced_fields


def test_the_generated_blocks_match_the_code() -> None:
    page = PAGE.read_text()
    assert page == regenerate(page), (
        "docs/setup-upstreams.md is stale: run `.venv/bin/python -m docs_gen.upstreams --write`"
    )


def test_every_block_is_on_the_page() -> None:
    page = PAGE.read_text()
    for name in BLOCKS:
        assert f"<!-- generated: {name} -->" in page


def test_every_custom_field_the_engine_names_has_a_type() -> None:
    # A field the emulator's org lacks has no type to document, and the tests never exercise it.
    assert unplaced_fields() == set()


def test_the_writes_are_the_engine_write_backs() -> None:
    page = PAGE.read_text()
    for field in ("Activation_Status__c", "WHMCS_Order_ID__c", "WHMCS_Service_ID__c"):
        assert any(
            f"`{field}`" in line and line.endswith("| reads, writes |")
            for line in page.splitlines()
        )
