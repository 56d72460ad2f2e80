"""The pure leader-election rule."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from reconciler.leader import LeaseRecord, decide, micro_time

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_no_lease_creates_it() -> None:
    d = decide(None, identity="a", duration_s=15, now=NOW, observed_for_s=0)
    assert d.action == "create"
    assert d.record == LeaseRecord("a", 15, micro_time(NOW), micro_time(NOW), 0)
    assert micro_time(NOW) == "2026-01-02T03:04:05.678901Z"


def test_holder_renews_and_keeps_acquire_time() -> None:
    held = LeaseRecord("a", 15, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:10.000000Z", 3)
    d = decide(held, identity="a", duration_s=15, now=NOW, observed_for_s=100)
    assert d.action == "renew"
    assert d.record is not None
    assert d.record.acquire_time == held.acquire_time
    assert d.record.renew_time == micro_time(NOW)
    assert d.record.transitions == 3


def test_other_holder_is_respected_until_the_record_is_stale_for_a_lease_duration() -> None:
    held = LeaseRecord("a", 15, "t0", "t1", 2)
    wait = decide(held, identity="b", duration_s=15, now=NOW, observed_for_s=14.9)
    assert wait.action == "wait"
    assert wait.record is None
    take = decide(held, identity="b", duration_s=15, now=NOW, observed_for_s=15)
    assert take.action == "acquire"
    assert take.record is not None
    assert take.record.holder == "b"
    assert take.record.transitions == 3
    assert "has not renewed" in take.reason


def test_released_lease_is_taken_at_once() -> None:
    released = LeaseRecord("", 1, "t0", "t1", 4)
    d = decide(released, identity="b", duration_s=15, now=NOW, observed_for_s=0)
    assert d.action == "acquire"
    assert d.record is not None
    assert d.record.transitions == 5


def test_lease_round_trips_through_its_spec() -> None:
    rec = LeaseRecord("a", 7, "x", "y", 2)
    assert LeaseRecord.from_lease({"spec": rec.to_spec()}) == rec


@given(
    holder=st.sampled_from(["", "a", "b"]),
    me=st.sampled_from(["a", "b"]),
    observed=st.floats(min_value=0, max_value=100),
    duration=st.integers(min_value=1, max_value=60),
)
def test_a_live_other_holder_is_never_displaced(
    holder: str, me: str, observed: float, duration: int
) -> None:
    rec = LeaseRecord(holder, duration, "t0", "t1", 0)
    d = decide(rec, identity=me, duration_s=duration, now=NOW, observed_for_s=observed)
    if holder and holder != me and observed < duration:
        assert d.action == "wait"
    else:
        assert d.record is not None
        assert d.record.holder == me
