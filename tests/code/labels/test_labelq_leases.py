"""Leases and the budget, on SQLite and PostgreSQL: two holders never share an item, an expired
lease returns it, a label ends it, only the holder releases it; the queue hands out at most what
the day's budget has left; concurrent takes never lease one item twice nor overspend."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from labelq_support import give_labels, log_predictions

from loopml.config import Settings
from loopml.errors import RequestError
from loopml.labels import queue
from loopml.store import LabelItem, open_settings_store

PROBS = [
    {"negative": 0.2 + i / 1000, "neutral": 0.5, "positive": 0.3 - i / 1000} for i in range(60)
]
TEXTS = [f"the flight number {i} was {'late' if i % 2 else 'fine'} today" for i in range(60)]


def _take(settings: Settings, holder: str, limit: int = 10, **kw: object) -> list[str]:
    items = queue.take(settings, model_name=settings.model_name, limit=limit, holder=holder,
                       strategy="uncertainty", **kw)  # type: ignore[arg-type]  # fmt: skip
    return [i.request_id for i in items]


def test_two_holders_expiry_feedback_and_release(backend_settings: Settings) -> None:
    settings = backend_settings
    log_predictions(settings, TEXTS, PROBS)
    first = _take(settings, "ann")
    second = _take(settings, "bob")
    assert len(first) == len(second) == 10 and not set(first) & set(second)
    leased = {
        lease.request_id: lease.holder for lease in queue.leases(settings, settings.model_name)
    }
    assert leased == {**dict.fromkeys(first, "ann"), **dict.fromkeys(second, "bob")}

    # a label ends ann's lease on it; release is the holder's own
    give_labels(settings, first[:3])
    assert queue.release(settings, first[3:5], "bob") == 0
    assert queue.release(settings, first[3:5], "ann") == 2
    running = {lease.request_id for lease in queue.leases(settings, settings.model_name)}
    assert running == set(first[5:]) | set(second)
    # the released items come back; the labelled ones never do
    again = _take(settings, "cid", limit=60)
    assert set(first[3:5]) <= set(again)
    assert not set(again) & (set(first[:3]) | set(first[5:]) | set(second))

    # past the lease, everything unlabelled returns (renewal keeps bob's for longer)
    assert queue.renew(settings, second, "bob", lease_s=7200) == 10
    later = datetime.now(UTC) + timedelta(seconds=settings.label_lease_s + 60)
    back = _take(settings, "dan", limit=60, now=later)
    assert set(back) == set(first[5:]) | set(again)
    assert not set(back) & set(second)


def test_budget_counts_handed_out_and_received(backend_settings: Settings) -> None:
    settings = backend_settings.model_copy(update={"label_budget_per_day": 12})
    ids = log_predictions(settings, TEXTS, PROBS)
    give_labels(settings, ids[:4])  # 4 labels received today
    assert queue.budget(settings, settings.model_name).left == 8
    assert len(_take(settings, "ann", limit=5)) == 5
    assert len(_take(settings, "bob", limit=5)) == 3  # 4 received + 8 handed out = 12
    assert _take(settings, "cid", limit=5) == []
    spent = queue.budget(settings, settings.model_name)
    assert (spent.received, spent.handed_out, spent.left) == (4, 8, 0)
    # expired leases give their share back
    later = datetime.now(UTC) + timedelta(seconds=settings.label_lease_s + 60)
    assert len(_take(settings, "dan", limit=20, now=later)) == 8


def test_items_sent_to_label_studio_are_not_offered_again_and_stay_in_the_budget(
    backend_settings: Settings,
) -> None:
    settings = backend_settings.model_copy(update={"label_budget_per_day": 12})
    log_predictions(settings, TEXTS, PROBS)
    pushed = _take(settings, "pusher", limit=5)
    now = datetime.now(UTC)
    with open_settings_store(settings) as store, store.session() as session:
        session.add_all(  # what `loopml label push` records for each task it created
            LabelItem(
                request_id=rid,
                model_name=settings.model_name,
                project_id="1",
                task_id=str(i),
                status="pushed",
                annotations=0,
                pushed_at=now,
                updated_at=now,
            )
            for i, rid in enumerate(pushed)
        )
    # the leases run out while the tasks wait in Label Studio: they are not offered again
    later = now + timedelta(seconds=settings.label_lease_s + 60)
    again = _take(settings, "pusher", limit=20, now=later)
    assert len(again) == 7 and not set(again) & set(pushed)
    spent = queue.budget(settings, settings.model_name, now=later)
    assert (spent.handed_out, spent.left) == (12, 0)
    # a day later the day's budget is free again; the tasks are still not offered
    tomorrow = now + timedelta(days=1, hours=1)
    fresh = _take(settings, "pusher", limit=60, now=tomorrow)
    assert len(fresh) == 12 and not set(fresh) & set(pushed)


def test_bad_arguments_name_the_field(settings: Settings) -> None:
    for kwargs, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 5, "strategy": "loudest"}, "strategy"),
        ({"limit": 5, "holder": " "}, "holder"),
        ({"limit": 5, "lease_s": 0}, "lease_s"),
    ):
        args = {"model_name": "sentiment", "holder": "ann", **kwargs}
        with pytest.raises(RequestError, match=field):
            queue.take(settings, **args)  # type: ignore[arg-type]


@pytest.mark.slow
def test_concurrent_takes_never_share_nor_overspend(backend_settings: Settings) -> None:
    settings = backend_settings.model_copy(update={"label_budget_per_day": 45})
    texts = [f"{t} round {r}" for r in range(2) for t in TEXTS]
    log_predictions(settings, texts, PROBS * 2)
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker(name: str) -> None:
        try:
            barrier.wait()
            got: list[str] = []
            for _ in range(3):
                got += _take(settings, name, limit=8)
            results[name] = got
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"h{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    every = [rid for got in results.values() for rid in got]
    assert len(every) == len(set(every)) == 45  # each item once; the budget, not more
    leased = queue.leases(settings, settings.model_name)
    expected = {(rid, holder) for holder, got in results.items() for rid in got}
    assert {(lease.request_id, lease.holder) for lease in leased} == expected
