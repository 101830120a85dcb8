"""Salesforce ids: the case-safe checksum, 15/18-character input, deterministic generation."""

from emulators.salesforce import ids


def test_checksum_matches_salesforce_for_a_known_id():
    assert ids.to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"


def test_fifteen_and_case_folded_eighteen_normalise_to_the_same_id():
    assert ids.normalize("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert ids.normalize("001a0000006vm9riac") == "001A0000006Vm9rIAC"
    assert ids.normalize("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"


def test_malformed_ids_are_refused():
    for bad in ("", "001", "001A0000006Vm9r!", "001A0000006Vm9rIA", "001A0000006Vm9r' OR '1'='1"):
        assert ids.normalize(bad) is None


def test_generated_ids_carry_the_prefix_a_valid_checksum_and_creation_order():
    factory = ids.IdFactory(seed=3)
    made = [factory.new("801") for _ in range(70)]
    assert all(len(i) == 18 and i.startswith("801") for i in made)
    assert all(ids.normalize(i[:15]) == i for i in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_generation_is_deterministic_under_a_seed_and_survives_state_round_trip():
    first, second = ids.IdFactory(seed=7), ids.IdFactory(seed=7)
    assert [first.new("001") for _ in range(3)] == [second.new("001") for _ in range(3)]
    restored = ids.IdFactory(seed=99)
    restored.load_state(first.to_state())
    assert restored.new("001") == first.new("001")
    assert ids.IdFactory(seed=8).new("001") != ids.IdFactory(seed=7).new("001")
