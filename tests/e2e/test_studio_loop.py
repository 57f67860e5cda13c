"""Done when, as a new user would: point loopml at a Label Studio project, label what the queue
offers there, watch the labels arrive as feedback with their annotators, and the controller
retrain on them. The real Label Studio server, real MLflow, SQLite, the real controller."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from label_studio_server import LabelStudio
from logged_predictions import insert_predictions
from sqlalchemy import select
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import load_settings
from loopml.control.controller import Controller
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import Feedback, Prediction, open_store


def label(*args: str) -> Any:
    """``loopml label ARGS --json`` (what the user types); its parsed output."""
    result = CliRunner().invoke(app, ["label", *args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_labels_made_in_label_studio_become_feedback_and_the_controller_retrains_on_them(
    label_studio: LabelStudio, home: Any, tweets: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1. A project in Label Studio, and loopml pointed at it (what the README tells users).
    project = label_studio.admin.post(
        "/api/projects/", json={"title": "airline tweets", "label_config": "<View></View>"}
    ).json()["id"]
    for key, value in {
        "LOOPML_LABEL_STUDIO_URL": label_studio.url,
        "LOOPML_LABEL_STUDIO_TOKEN": label_studio.token,
        "LOOPML_LABEL_STUDIO_PROJECT": str(project),
        "LOOPML_LABEL_STUDIO_MIN_ANNOTATIONS": "2",
    }.items():
        monkeypatch.setenv(key, value)
    s = load_settings().prepare()
    s = s.model_copy(
        update={
            "monitor_interval_s": 0.0,
            "monitor_min_samples": 200,
            "retrain_min_labeled": 30,
            "retrain_cooldown_s": 0.0,
            "retrain_tune_trials": 0,
            # small slices on this data and a busy machine; the gate is tested elsewhere
            "gate_min_slice_f1": 0.0,
            "gate_slice_tolerance": 1.0,
            "gate_trusted_tolerance": 1.0,
            "gate_baseline_margin": -1.0,
            "gate_f1_tolerance": 1.0,
            "gate_max_p99_latency_ms": 60_000.0,
        }
    )

    # 2. A champion that never saw airline tweets now answers 300 of them (unlabelled).
    frame = tweets.frame
    home_rows = frame[frame["domain"] != "airline"].sample(3000, random_state=0).sort_index()
    airline = frame[frame["domain"] == "airline"].sample(300, random_state=1)
    store, registry = open_store(s.db_url), Registry(s)
    v1 = train(s, dataset=Dataset("non-airline", home_rows, content_version(home_rows))).version
    promote(store, registry, v1, reason="test: first champion")
    start = datetime.now(UTC) - timedelta(hours=1)
    texts = airline["text"].tolist()
    insert_predictions(s, v1, registry.load(v1), texts, None, start=start)
    truth = dict(zip(texts, airline["label"], strict=True))

    # 3. The queue's 40 best items go to the project, the model's answers pre-annotated.
    pushed = label("push", "--limit", "40")
    assert pushed["project"] == project and pushed["created"] == 40

    # 4. Two annotators label every task in Label Studio (the truth), but disagree on one.
    first, second = label_studio.signup("anna"), label_studio.signup("ben")
    with store.session() as session:
        text_of = dict(session.execute(select(Prediction.request_id, Prediction.text)).all())
    classes = sorted(set(airline["label"]))
    disputed = pushed["tasks"][0]
    for task in pushed["tasks"]:
        right = truth[text_of[task["request_id"]]]
        first.annotate(task["task_id"], right)
        other = classes[(classes.index(right) + 1) % 3] if task is disputed else right
        second.annotate(task["task_id"], other)

    # 5. The labels arrive as feedback with their annotators; the disagreement waits.
    pulled = label("pull")
    assert pulled["items"] == {"agreed": 39, "disagreed": 1}, pulled
    assert pulled["annotations"] == 80 and pulled["refused"] == []
    both = f"labelstudio:{','.join(sorted([str(first.id), str(second.id)]))}"
    with store.session() as session:
        given = dict(session.execute(select(Feedback.request_id, Feedback.key_id)).all())
    assert len(given) == 39 and set(given.values()) == {both}
    assert disputed["request_id"] not in given
    assert [d["request_id"] for d in label("disagreements")] == [disputed["request_id"]]

    # 6. The controller sees the drift and retrains on those 39 labels, by those annotators.
    tick = Controller(s, store, registry).tick()
    print("tick:", tick.action, tick.reason)
    record = next(e for e in store.history(s.model_name, limit=10) if e.action == "retrain")
    provenance = record.details["label_provenance"]
    assert provenance["by_key"] == {both: 39} and provenance["used"] == 39
    assert tick.action == "rollout_started", tick.to_dict()
    store.dispose()
