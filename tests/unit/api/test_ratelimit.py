"""The public routes' rate limit (GCRA): a burst of `limit`, then `limit` per period, evenly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.ratelimit import MemoryLimiter, Verdict, gcra


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(
    limit: int = 5, period: float = 60.0, capacity: int = 1000
) -> tuple[MemoryLimiter, Clock]:
    clock = Clock()
    return MemoryLimiter(limit=limit, period=period, capacity=capacity, clock=clock), clock


def test_a_burst_of_the_limit_passes_and_the_next_waits_one_interval() -> None:
    rate, _ = limiter(limit=5)
    verdicts = [rate.hit("a") for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts[:5]] == [4, 3, 2, 1, 0]
    assert verdicts[5].retry_after == pytest.approx(12.0)  # 60 s / 5


def test_the_bucket_refills_one_request_per_interval() -> None:
    rate, clock = limiter(limit=5)
    for _ in range(5):
        rate.hit("a")
    clock.now += 11.9
    assert not rate.hit("a").allowed
    clock.now += 0.1
    assert rate.hit("a").allowed
    assert not rate.hit("a").allowed
    clock.now += 60
    assert [rate.hit("a").allowed for _ in range(6)] == [True] * 5 + [False]


def test_hammering_while_refused_does_not_push_the_wait_further() -> None:
    rate, clock = limiter(limit=2)
    rate.hit("a"), rate.hit("a")
    waits = []
    for _ in range(100):
        waits.append(rate.hit("a").retry_after)
        clock.now += 0.1
    assert waits[0] == pytest.approx(30.0)
    assert waits[-1] == pytest.approx(30.0 - 9.9)
    clock.now += waits[-1]
    assert rate.hit("a").allowed


def test_each_address_has_its_own_bucket() -> None:
    rate, _ = limiter(limit=1)
    assert rate.hit("192.0.2.1").allowed
    assert not rate.hit("192.0.2.1").allowed
    assert rate.hit("192.0.2.2").allowed


def test_memory_is_bounded_and_the_least_recently_seen_are_forgotten() -> None:
    rate, _ = limiter(limit=1, capacity=3)
    for address in ("a", "b", "c"):
        rate.hit(address)
    rate.hit("a")  # seen again: now the most recent
    rate.hit("d")
    assert len(rate) == 3
    assert rate.hit("b").allowed  # forgotten, so a full bucket again
    assert not rate.hit("a").allowed


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (11.01, "12")])
def test_retry_after_is_whole_seconds_rounded_up_and_never_zero(
    seconds: float, header: str
) -> None:
    assert Verdict(False, seconds, 0).retry_after_header == header


def test_a_client_at_exactly_the_limit_is_never_refused() -> None:
    rate, clock = limiter(limit=60)
    for _ in range(10_000):
        assert rate.hit("steady").allowed
        clock.now += 1.0


@given(
    limit=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=300),
)
def test_no_window_lets_more_through_than_a_burst_plus_the_refill(
    limit: int, gaps: list[float]
) -> None:
    period = 60.0
    interval = period / limit
    tat: float | None = None
    now = 0.0
    allowed: list[float] = []
    for gap in gaps:
        now += gap
        verdict, tat = gcra(tat, now, limit=limit, period=period)
        if verdict.allowed:
            allowed.append(now)
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = allowed[j] - start
            # In any stretch of time: at most the full burst plus what refilled meanwhile.
            assert j - i + 1 <= limit + span / interval + 1e-6
