"""The controller applies the retention period once a day while the loop runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aged_rows import log, remaining
from sqlalchemy import select

from loopml.config import Settings
from loopml.control.controller import Controller
from loopml.store import AuditEntry, open_store


def test_the_first_tick_and_then_one_a_day_purge(settings: Settings) -> None:
    s = settings.model_copy(update={"retention_days": 30.0})
    store = open_store(s.db_url)
    controller = Controller(s, store)
    now = datetime.now(UTC)
    old, fresh = log(store, age_days=40), log(store, age_days=1)
    controller.tick(now=now)
    assert remaining(store)[0] == set(fresh)
    later = log(store, age_days=40)
    controller.tick(now=now + timedelta(hours=1))  # purged an hour ago: not again
    assert remaining(store)[0] == set(fresh + later)
    controller.tick(now=now + timedelta(days=1))
    assert remaining(store)[0] == set(fresh)
    controller.tick(now=now + timedelta(days=2))  # nothing to delete: no audit record
    with store.session() as session:
        purges = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "purge")))
    assert [p.details["predictions"] for p in purges] == [1, 1]
    assert old[0] not in remaining(store)[0]
    store.dispose()
