"""ML Test Score, Model 2: every ended rollout records the gate's offline delta beside the
canary's live delta (real registry, real SQLite), and the agreement across rollouts is read back
by the library, the CLI and the gauges."""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.control import rollout
from loopml.control.approval import approve
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.monitoring import MonitorCollector
from loopml.monitoring.offline_online import OFFLINE_ONLINE_KEY, agreement
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import Feedback, Prediction, Store, open_store

pytestmark = pytest.mark.slow

LABELS = ("negative", "positive")


def log(store: Store, version: str, variant: str, n: int, *, right: float) -> list[tuple]:
    """``n`` answered predictions with feedback, half of each class; the first ``right`` share
    predicted correctly, the rest with the other class. Returns (truth, predicted) pairs."""
    rows = []
    now = datetime.now(UTC)
    with store.session() as session:
        for i in range(n):
            rid = uuid.uuid4().hex
            truth = LABELS[i % 2]
            predicted = truth if i < right * n else LABELS[1 - i % 2]
            session.add(
                Prediction(
                    request_id=rid,
                    ts=now,
                    model_name="sentiment",
                    model_version=version,
                    variant=variant,
                    text=None,
                    text_hash="h",
                    text_length=5,
                    label=predicted,
                    probabilities={},
                    latency_ms=3.0,
                )
            )
            session.add(Feedback(request_id=rid, ts=now, label=truth))
            rows.append((truth, predicted))
    return rows


def macro_f1(rows: list[tuple]) -> float:
    truth, predicted = zip(*rows, strict=True)
    return float(f1_score(truth, predicted, labels=list(LABELS), average="macro"))


def gate_numbers(registry: Registry, version: str) -> tuple[float, float]:
    """The challenger's and the champion's macro-F1 as the gate compared them (gate.json: its
    macro_f1 check, on the rows the champion was scored on, and the champion's evaluation)."""
    run_id = registry.version(version).run_id
    assert run_id is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.client.download_artifacts(run_id, "gate.json", tmp)
        record = json.loads(Path(path).read_text())
    (check,) = [c for c in record["gate"]["checks"] if c["name"] == "macro_f1"]
    return check["value"], record["champion"]["metrics"]["macro_f1"]


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
    train(s, dataset=small_tweets, params={"C": 0.05})  # heavily regularised: weaker offline
    promote(store, registry, "1", force=True, reason="a weak first champion")
    train(s, dataset=small_tweets, params={"C": 4.0})
    approve(store, registry, "2", by="test")  # another C than the champion's: a reviewed spec
    return s, store, registry


def test_each_rollout_end_records_offline_and_live_deltas(
    setup: tuple[Settings, Store, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, registry = setup
    candidate, champion = gate_numbers(registry, "2")
    offline = round(candidate - champion, 6)
    assert offline > 0.02  # C=4 beats C=0.05 on the gate's split

    # Rollout 1: the challenger is clearly worse live: rolled back; offline and live disagree.
    rollout.start(settings, store, registry, "2", mode="canary", force=True)
    champ_rows = log(store, "1", "champion", 120, right=0.9)
    chall_rows = log(store, "2", "challenger", 120, right=0.6)
    result = rollout.step(settings, store, registry)
    assert result is not None and result.action == "rollback", result.to_dict()
    end = store.history("sentiment", limit=1)[0]
    pair = end.details[OFFLINE_ONLINE_KEY]
    assert (end.action, pair["champion"], pair["challenger"]) == ("rollout_rollback", "1", "2")
    assert pair["offline_delta"] == pytest.approx(offline, abs=1e-6)
    live = macro_f1(chall_rows) - macro_f1(champ_rows)
    assert live < -0.2
    assert pair["live_delta"] == pytest.approx(live, abs=1e-6)
    assert pair["live"]["champion_labeled"] == pair["live"]["challenger_labeled"] == 120
    assert pair["notes"] is None

    # Rollout 2 of the same version: better live at both steps: promoted; both deltas agree.
    rollout.start(settings, store, registry, "2", mode="canary", force=True)
    champ_rows, chall_rows = [], []
    for expected in ("advance", "promote"):
        champ_rows += log(store, "1", "champion", 100, right=0.7)
        chall_rows += log(store, "2", "challenger", 100, right=0.9)
        result = rollout.step(settings, store, registry)
        assert result is not None and result.action == expected, result.to_dict()
    end = store.history("sentiment", limit=1)[0]
    pair = end.details[OFFLINE_ONLINE_KEY]
    assert end.action == "rollout_promote"
    # The live delta covers the whole rollout (both steps), not only its last step.
    assert pair["live"]["challenger_labeled"] == 200
    assert pair["live_delta"] == pytest.approx(macro_f1(chall_rows) - macro_f1(champ_rows))
    assert pair["live_delta"] > 0.1
    assert pair["offline_delta"] == pytest.approx(offline, abs=1e-6)

    found = agreement(store, "sentiment", last=settings.offline_online_rollouts)
    assert [p.outcome for p in found.pairs] == ["promote", "rollback"]  # newest first
    assert [p.agrees for p in found.pairs] == [True, False]
    assert (found.points, found.agreeing, found.sign_agreement) == (2, 1, 0.5)
    assert (found.correlation, found.alarm) == (None, False)  # 2 points: no evidence yet

    gauges = {
        f.name: f.samples[0].value
        for f in MonitorCollector(store, "sentiment", rollouts=10).collect()
    }
    assert gauges["loopml_offline_online_points"] == 2
    assert gauges["loopml_offline_online_sign_agreement"] == 0.5
    assert "loopml_offline_online_correlation" not in gauges

    monkeypatch.setenv("LOOPML_HOME", str(settings.home))
    monkeypatch.setenv("LOOPML_TRACKING_URI", settings.mlflow_uri)
    result_cli = CliRunner().invoke(app, ["check", "offline-online", "--json"])
    assert result_cli.exit_code == 0, result_cli.output
    body = json.loads(result_cli.stdout)
    assert (body["points"], body["agreeing"], body["alarm"]) == (2, 1, False)
    assert body["pairs"][1]["live_delta"] == pytest.approx(live, abs=1e-6)
    store.dispose()
