"""The rollout state machine on a real registry and database, fed with logged predictions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loopml.config import Settings
from loopml.control import rollout
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.errors import RolloutError
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import CHALLENGER, CHAMPION, PREVIOUS, SHADOW_SUFFIX, load_routing
from loopml.store import Feedback, Prediction, ServingError, Store, open_store
from loopml.tracking import experiment_id


@pytest.fixture
def setup(settings: Settings, small_tweets: Dataset) -> tuple[Settings, Store, Registry]:
    s = settings.model_copy(
        update={
            "gate_min_slice_f1": 0.2,
            "rollout_step_min_s": 0.0,
            "rollout_min_requests": 50,
            "rollout_min_labeled": 50,
            "rollout_steps": [0.1, 0.5, 1.0],
        }
    )
    store = open_store(s.db_url)
    registry = Registry(s)
    train(s, dataset=small_tweets)
    promote(store, registry, "1")
    train(s, dataset=small_tweets)
    return s, store, registry


def log(
    store: Store,
    version: str,
    variant: str,
    n: int,
    *,
    accuracy: float,
    ids: list[str] | None = None,
    latency: float = 3.0,
) -> list[str]:
    """Write ``n`` answered predictions with feedback, ``accuracy`` of them right."""
    ids = ids or [uuid.uuid4().hex for _ in range(n)]
    now = datetime.now(UTC)
    with store.session() as session:
        for i, rid in enumerate(ids):
            right = i < accuracy * n
            key = rid + SHADOW_SUFFIX if variant == "shadow" else rid
            session.add(
                Prediction(
                    request_id=key,
                    ts=now,
                    model_name="sentiment",
                    model_version=version,
                    variant=variant,
                    text=None,
                    text_hash="h",
                    text_length=5,
                    label="positive" if right else "negative",
                    probabilities={},
                    latency_ms=latency,
                )
            )
            if variant != "shadow" and session.get(Feedback, rid) is None:
                session.add(Feedback(request_id=rid, ts=now, label="positive"))
    return ids


def actions(store: Store) -> list[str]:
    return [e.action for e in reversed(store.history("sentiment"))]


@pytest.mark.slow
def test_canary_steps_up_and_promotes(setup: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = setup
    routing = rollout.start(settings, store, registry, "2", mode="canary", reason="test")
    assert (routing.mode, routing.weight, routing.challenger) == ("canary", 0.1, "2")
    assert registry.aliases()[CHALLENGER] == "2"
    with pytest.raises(RolloutError, match="already running"):
        rollout.start(settings, store, registry, "2", mode="canary")
    # The refused start's MLflow run is not left RUNNING (issue 19, row 5): only the rollout's.
    exp = experiment_id(settings, registry.client)
    running = registry.client.search_runs([exp], filter_string="attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in running] == [(routing.rollout or {})["run_id"]]

    first = rollout.step(settings, store, registry)
    assert first is not None and first.action == "wait"
    # the wait says what it waits for
    assert "error_rate: 0 errors in 0 calls" in first.reason and "need 50 calls" in first.reason
    for expected in ("advance", "promote"):  # 10% -> 50%; the step to 100% is the promotion
        log(store, "1", "champion", 120, accuracy=0.8)
        log(store, "2", "challenger", 120, accuracy=0.8)
        result = rollout.step(settings, store, registry)
        assert result is not None and result.action == expected, result.to_dict()
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    final = load_routing(store, "sentiment")
    assert (final.champion, final.challenger, final.mode) == ("2", None, "none")
    assert actions(store) == [
        "promote",
        "rollout_start_canary",
        "rollout_advance",
        "rollout_promote",
    ]
    assert store.history("sentiment")[0].details["analysis"]["status"] == "pass"


@pytest.mark.slow
def test_worse_challenger_is_rolled_back(setup: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = setup
    rollout.start(settings, store, registry, "2", mode="canary", weight=0.5)
    log(store, "1", "champion", 150, accuracy=0.8)
    log(store, "2", "challenger", 150, accuracy=0.4)
    result = rollout.step(settings, store, registry)
    assert result is not None and result.action == "rollback"
    assert "live_quality" in result.reason
    routing = load_routing(store, "sentiment")
    assert (routing.champion, routing.challenger, routing.mode, routing.weight) == (
        "1",
        None,
        "none",
        0.0,
    )
    assert CHALLENGER not in registry.aliases()
    assert actions(store)[-1] == "rollout_rollback"


@pytest.mark.slow
def test_erroring_challenger_is_rolled_back(setup: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = setup
    rollout.start(settings, store, registry, "2", mode="canary")
    with store.session() as session:
        session.add(
            ServingError(
                ts=datetime.now(UTC),
                model_name="sentiment",
                model_version="2",
                variant="challenger",
                errors=40,
                error="RuntimeError: boom",
            )
        )
    log(store, "2", "challenger", 10, accuracy=1.0)
    result = rollout.step(settings, store, registry)
    assert result is not None and result.action == "rollback" and "error_rate" in result.reason


@pytest.mark.slow
def test_shadow_uses_paired_answers_and_promotes(setup: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = setup
    routing = rollout.start(settings, store, registry, "2", mode="shadow")
    assert routing.weight == 0.0
    ids = log(store, "1", "champion", 120, accuracy=0.8)
    log(store, "2", "shadow", 120, accuracy=0.8, ids=ids)
    result = rollout.step(settings, store, registry)
    assert result is not None and result.action == "promote", result.to_dict()
    assert "McNemar" in str(result.to_dict())


@pytest.mark.slow
def test_controller_away_longer_than_the_lease_rolls_back(
    setup: tuple[Settings, Store, Registry],
) -> None:
    settings, store, registry = setup
    rollout.start(settings, store, registry, "2", mode="canary")
    later = datetime.now(UTC) + timedelta(seconds=settings.rollout_lease_s + 5)
    result = rollout.step(settings, store, registry, now=later)
    assert result is not None and result.action == "rollback" and "away" in result.reason
    assert load_routing(store, "sentiment").mode == "none"


@pytest.mark.slow
def test_abort_and_status(setup: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = setup
    with pytest.raises(RolloutError, match="no rollout"):
        rollout.abort(settings, store, registry, reason="x")
    rollout.start(settings, store, registry, "2", mode="canary", weight=0.2)
    info = rollout.status(settings, store, registry)
    assert info.routing.weight == 0.2 and info.analysis is not None
    assert info.analysis.status == "wait"
    rollout.abort(settings, store, registry, reason="operator said so")
    assert store.history("sentiment")[0].reason == "operator said so"
    assert rollout.status(settings, store, registry).analysis is None


@pytest.mark.slow
def test_worse_shadow_fails_mcnemar(setup: tuple[Settings, Store, Registry]) -> None:
    settings, store, registry = setup
    rollout.start(settings, store, registry, "2", mode="shadow")
    ids = log(store, "1", "champion", 120, accuracy=0.8)
    log(store, "2", "shadow", 120, accuracy=0.6, ids=ids)  # wrong on 24 pairs the champion got
    result = rollout.step(settings, store, registry)
    assert result is not None and result.action == "rollback"
    assert result.analysis is not None
    quality = next(c for c in result.analysis.checks if c.name == "live_quality")
    assert "McNemar on 24 discordant pairs" in quality.detail
    assert quality.p_value is not None and quality.p_value < 1e-6


@pytest.mark.slow
def test_quality_is_judged_once_at_the_end_of_a_step(
    setup: tuple[Settings, Store, Registry],
) -> None:
    settings, store, registry = setup
    patient = settings.model_copy(update={"rollout_step_min_s": 3600.0})
    rollout.start(patient, store, registry, "2", mode="canary", weight=0.5)
    log(store, "1", "champion", 150, accuracy=0.8)
    log(store, "2", "challenger", 150, accuracy=0.4)
    early = rollout.step(patient, store, registry)
    assert early is not None and early.action == "wait", "no quality verdict mid-step"
    late = rollout.step(settings, store, registry)
    assert late is not None and late.action == "rollback"


@pytest.mark.slow
def test_an_aborted_rollout_is_not_promoted_by_a_stale_tick(
    setup: tuple[Settings, Store, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, registry = setup
    rollout.start(settings, store, registry, "2", mode="canary", weight=0.5)
    log(store, "1", "champion", 120, accuracy=0.8)
    log(store, "2", "challenger", 120, accuracy=0.8)
    analysed = rollout.live_analysis

    def operator_aborts_meanwhile(*args: Any, **kwargs: Any) -> Any:
        result = analysed(*args, **kwargs)
        rollout.abort(settings, store, registry, reason="operator")
        return result

    monkeypatch.setattr(rollout, "live_analysis", operator_aborts_meanwhile)
    with pytest.raises(RolloutError, match="changed while it was being analyzed"):
        rollout.step(settings, store, registry)
    assert registry.aliases()[CHAMPION] == "1"
    assert load_routing(store, "sentiment").mode == "none"
