"""A controller retrain with noisy feedback: the rows the noise check holds back are counted in
the retrain's MLflow run and audit record and wait in ``loopml feedback held``, where a reviewer
accepts or rejects them (audited); a check that marks too much trips the guard, on the record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from logged_predictions import insert_predictions
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.control.controller import Controller
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import open_store

FLIP = {"negative": "positive", "positive": "negative", "neutral": "negative"}


@pytest.mark.slow
def test_a_controller_retrain_holds_back_noisy_feedback_and_the_cli_decides(
    settings: Settings, tweets: Dataset
) -> None:
    s = settings.model_copy(
        update={
            "monitor_interval_s": 0,
            "retrain_cooldown_s": 0,
            "retrain_min_labeled": 200,
            "gate_max_p99_latency_ms": 0.001,  # every retrain is refused: the loop goes on
            "noise_check": True,
            "noise_max_fraction": 0.5,
        }
    )
    others = tweets.frame[tweets.frame["domain"] != "airline"].sample(2000, random_state=0)
    first = train(s, dataset=Dataset("non-airline", others, content_version(others)))
    registry = Registry(s)
    airline = tweets.frame[tweets.frame["domain"] == "airline"].sample(800, random_state=0)
    truth = airline["label"].to_numpy().copy()
    flip = np.random.default_rng(0).random(len(truth)) < 0.10
    truth[flip] = [FLIP[label] for label in truth[flip]]
    with open_store(s.db_url) as store:
        promote(store, registry, first.version, force=True, reason="noise test")
        insert_predictions(
            s, first.version, registry.load(first.version), airline["text"].tolist(), list(truth)
        )
        tick = Controller(s, store).tick()
        assert tick.action == "retrain_rejected", tick
        entry = store.history(s.model_name, limit=5)[0]
    assert entry.action == "retrain_rejected" and entry.to_version == tick.version
    noise = entry.details["label_noise"]
    assert noise["checked"] == len(airline) and noise["held_new"] > 0
    assert noise["held_back"] == noise["held_new"] and not noise["guard_tripped"]
    run = registry.client.get_run(entry.details["run_id"])
    assert run.data.metrics["noise_held_back"] == noise["held_new"]
    assert run.data.metrics["noise_checked"] == len(airline)
    assert run.data.tags["loopml.noise.held_back"] == str(noise["held_new"])
    assert int(run.data.tags["loopml.feedback_rows"]) == len(airline) - noise["held_new"]

    cli = CliRunner()
    listed = cli.invoke(app, ["feedback", "held", "--json"])
    assert listed.exit_code == 0, listed.output
    held = json.loads(listed.stdout)
    assert len(held) == noise["held_new"]
    assert {r["run_id"] for r in held} == {run.info.run_id}
    assert {r["text"] for r in held} <= set(airline["text"])
    precision = np.mean([t in set(airline["text"][flip]) for t in (r["text"] for r in held)])
    print(f"\nheld {len(held)} of {len(airline)} ({flip.sum()} flipped): precision {precision:.2f}")
    ids = [r["id"] for r in held]

    assert cli.invoke(app, ["feedback", "accept", str(ids[0])]).exit_code == 2  # no reason
    ok = cli.invoke(app, ["feedback", "accept", str(ids[0]), "--reason", "checked: right"])
    assert ok.exit_code == 0 and "trains next time" in ok.stdout, ok.output
    rejected = cli.invoke(app, ["feedback", "reject", *map(str, ids[1:]), "--reason", "wrong"])
    assert rejected.exit_code == 0, rejected.output
    again = cli.invoke(app, ["feedback", "reject", str(ids[0]), "--reason", "x"])
    assert again.exit_code == 2 and "already decided" in again.output
    assert cli.invoke(app, ["feedback", "reject", "999999", "--reason", "x"]).exit_code == 2
    assert json.loads(cli.invoke(app, ["feedback", "held", "--json"]).stdout) == []
    decided = json.loads(cli.invoke(app, ["feedback", "held", "--all", "--json"]).stdout)
    assert [r["status"] for r in decided] == ["accepted"] + ["rejected"] * (len(ids) - 1)

    # The next retrain: the accepted label trains, rejected ones never do; the rest is checked
    # again and, with a guard no check can pass, nothing more is held back, on the record.
    strict = s.model_copy(update={"noise_max_fraction": 0.0001})
    with open_store(s.db_url) as store:
        tick = Controller(strict, store).tick()
        history = store.history(s.model_name, limit=10)
    actions = [h.action for h in history]
    assert tick.action == "retrain_rejected" and "label_noise_guard" in actions, actions
    second = next(h for h in history if h.action == "retrain_rejected").details["label_noise"]
    assert (second["accepted"], second["rejected"]) == (1, len(ids) - 1)
    assert second["guard_tripped"] and second["held_new"] == 0
    assert second["checked"] == len(airline) - len(ids)
    guard = next(h for h in history if h.action == "label_noise_guard")
    assert "none held back" in guard.reason and guard.details["flagged"] > 0
