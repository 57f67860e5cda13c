"""The live half of the offline/online pair (ML Test Score, Model 2): champion and challenger
macro-F1 on their labelled rollout traffic, canary and shadow, recomputed with scikit-learn."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sklearn.metrics import f1_score

from loopml.config import Settings
from loopml.control.live import live_macro_f1
from loopml.routing import SHADOW_SUFFIX
from loopml.store import Feedback, Prediction, Store, open_store

TRUTH = ["negative", "neutral", "positive"] * 20


def _prediction(rid: str, version: str, variant: str, label: str, ts: datetime) -> Prediction:
    return Prediction(
        request_id=rid,
        ts=ts,
        model_name="sentiment",
        model_version=version,
        variant=variant,
        text=None,
        text_hash="h",
        text_length=1,
        label=label,
        probabilities={},
        latency_ms=1.0,
    )


def _wrong(label: str) -> str:
    return "negative" if label != "negative" else "positive"


def _log(store: Store, *, shadow: bool, ts: datetime) -> tuple[list[str], list[str]]:
    """60 labelled requests: the champion right on 45, the challenger on 30 (in shadow mode the
    challenger answers the same requests; in canary mode requests of its own)."""
    champ, chall = [], []
    with store.session() as session:
        for i, truth in enumerate(TRUTH):
            rid = uuid.uuid4().hex
            champ.append(truth if i < 45 else _wrong(truth))
            session.add(_prediction(rid, "1", "champion", champ[-1], ts))
            session.add(Feedback(request_id=rid, ts=ts, label=truth))
            chall.append(truth if i % 2 == 0 else _wrong(truth))
            if shadow:
                session.add(_prediction(rid + SHADOW_SUFFIX, "2", "shadow", chall[-1], ts))
            else:
                other = uuid.uuid4().hex
                session.add(_prediction(other, "2", "challenger", chall[-1], ts))
                session.add(Feedback(request_id=other, ts=ts, label=truth))
    return champ, chall


@pytest.mark.parametrize("mode", ["canary", "shadow"])
def test_live_macro_f1_of_both_sides_since_the_rollout_started(
    settings: Settings, mode: str
) -> None:
    started = datetime.now(UTC)
    with open_store(settings.db_url) as store:
        _log(store, shadow=mode == "shadow", ts=started - timedelta(minutes=5))  # before: ignored
        champ, chall = _log(store, shadow=mode == "shadow", ts=started + timedelta(seconds=1))
        live = live_macro_f1(
            store, "sentiment", champion="1", challenger="2", mode=mode, since=started
        )
    expected_champ = f1_score(TRUTH, champ, average="macro")
    expected_chall = f1_score(TRUTH, chall, average="macro")
    assert live.labels == ["negative", "neutral", "positive"]
    assert (live.champion_labeled, live.challenger_labeled) == (60, 60)
    assert live.champion_macro_f1 == pytest.approx(expected_champ, abs=1e-6)
    assert live.challenger_macro_f1 == pytest.approx(expected_chall, abs=1e-6)
    assert live.delta == pytest.approx(expected_chall - expected_champ, abs=1e-6)
    assert live.delta is not None and live.delta < -0.2


def test_no_labels_no_delta(settings: Settings) -> None:
    with open_store(settings.db_url) as store:
        live = live_macro_f1(
            store, "sentiment", champion="1", challenger="2", mode="canary", since=datetime.now(UTC)
        )
    assert (live.champion_labeled, live.challenger_labeled, live.delta) == (0, 0, None)
