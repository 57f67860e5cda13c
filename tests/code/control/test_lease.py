"""The controller lease on the real SQLite and PostgreSQL stores: one holder at a time, takeover
only after expiry, fencing by generation, and the step a dead holder leaves behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from loopml.config import Settings
from loopml.control.lease import Lease
from loopml.errors import ControllerBusyError, LeaseLostError
from loopml.store import ControllerLease, Store, open_store


@pytest.fixture
def store(backend_settings: Settings) -> Iterator[Store]:
    with open_store(backend_settings.db_url) as opened:
        yield opened


def expire(store: Store, name: str = "m") -> None:
    """What the clock does to a holder that stopped renewing."""
    with store.session() as session:
        session.execute(
            update(ControllerLease)
            .where(ControllerLease.name == name)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_one_holder_at_a_time_and_the_other_is_told_who(store: Store) -> None:
    first = Lease(store, "m", duration_s=60, holder="pod-a:1:aa")
    second = Lease(store, "m", duration_s=60, holder="pod-b:2:bb")
    assert first.acquire() is None and first.held
    with pytest.raises(ControllerBusyError) as info:
        second.acquire()
    assert info.value.exit_code == 3 and info.value.holder == "pod-a:1:aa"
    assert "pod-a:1:aa" in str(info.value) and "did nothing" in str(info.value)
    assert not second.held
    first.renew()  # still the holder
    # Another model has its own lease.
    assert Lease(store, "other", duration_s=60, holder="pod-b:2:bb").acquire() is None


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(store: Store) -> None:
    first = Lease(store, "m", duration_s=60, holder="pod-a:1:aa")
    second = Lease(store, "m", duration_s=60, holder="pod-b:2:bb")
    first.acquire()
    first.renew(step="retrain")
    expire(store)
    previous = second.acquire()
    assert previous is not None
    assert (previous.holder, previous.step, previous.generation) == ("pod-a:1:aa", "retrain", 1)
    row = second.read()
    assert row is not None and (row.holder, row.generation, row.step) == ("pod-b:2:bb", 2, None)
    # The first wakes up (it hung past its expiry): its next fence refuses, naming the new one.
    with pytest.raises(LeaseLostError, match="pod-b:2:bb"):
        first.renew()
    assert not first.held
    first.release()  # does nothing to the new holder's row
    assert second.read() == row


def test_an_expired_lease_nobody_took_is_renewed_by_its_holder(store: Store) -> None:
    lease = Lease(store, "m", duration_s=60, holder="pod-a:1:aa")
    lease.acquire()
    expire(store)
    lease.renew()  # the generation did not move: nobody acted in between
    row = lease.read()
    assert row is not None and row.expires_at > datetime.now(UTC) and row.generation == 1


def test_release_lets_the_next_take_over_at_once(store: Store) -> None:
    first = Lease(store, "m", duration_s=600, holder="pod-a:1:aa")
    first.acquire()
    first.renew(step="retrain")
    first.release()
    previous = Lease(store, "m", duration_s=600, holder="pod-b:2:bb").acquire()
    assert previous is not None and previous.step is None  # a clean exit leaves nothing


def race(leases: list[Lease]) -> list[str]:
    """Every lease tries to acquire at the same moment, each from its own thread."""
    barrier = threading.Barrier(len(leases))
    outcomes: list[str] = []

    def take(lease: Lease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except ControllerBusyError:
            outcomes.append("busy")

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sorted(outcomes)


def test_holders_racing_for_the_lease_exactly_one_wins(backend_settings: Settings) -> None:
    """Eight holders, each on its own engine (its own connections, as processes have), try at
    once; then, once it expired, eight others try to take it over at once."""
    for round_ in ("fresh", "expired"):
        stores = [open_store(backend_settings.db_url) for _ in range(8)]
        leases = [
            Lease(s, "m", duration_s=60, holder=f"pod-{i}:{i}:{round_}")
            for i, s in enumerate(stores)
        ]
        try:
            assert race(leases) == ["busy"] * 7 + ["won"], round_
            assert sum(lease.held for lease in leases) == 1
        finally:
            expire(stores[0])
            for s in stores:
                s.dispose()
