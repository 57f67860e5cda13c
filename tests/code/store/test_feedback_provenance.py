"""Feedback provenance on SQLite and PostgreSQL: the migration, labels given once, the audited
admin relabel, and the CLI counterpart."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.control.live import labeled_feedback
from loopml.errors import ConflictError, NotFoundError, RequestError
from loopml.serving.feedback import FeedbackStore, relabel
from loopml.serving.metrics import Metrics
from loopml.store import Feedback, Prediction, Store, open_store
from loopml.store._db import make_engine

MIGRATIONS = Path(__file__).resolve().parents[3] / "src" / "loopml" / "store" / "migrations"


def predictions(store: Store, n: int, *, text_prefix: str = "text") -> list[str]:
    """Write ``n`` answered predictions (label positive) and return their request ids."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    with store.session() as session:
        for i, rid in enumerate(ids):
            session.add(
                Prediction(
                    request_id=rid,
                    ts=datetime.now(UTC),
                    model_name="sentiment",
                    model_version="1",
                    variant="champion",
                    text=f"{text_prefix} {i}",
                    text_hash="h",
                    text_length=6,
                    label="positive",
                    probabilities={"negative": 0.1, "neutral": 0.2, "positive": 0.7},
                    latency_ms=1.0,
                )
            )
    return ids


def test_migration_0003_adds_key_id_to_existing_feedback(backend_settings: Settings) -> None:
    engine = make_engine(backend_settings.db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # the schema as it was before provenance, with one label
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(
            text("INSERT INTO feedback (request_id, ts, label) VALUES ('old', :ts, 'neutral')"),
            {"ts": datetime.now(UTC)},
        )
    engine.dispose()
    store = open_store(backend_settings.db_url)  # upgrades to head
    columns = {c["name"] for c in inspect(store.engine).get_columns("feedback")}
    assert "key_id" in columns
    assert "ix_feedback_key_id" in {
        i["name"] for i in inspect(store.engine).get_indexes("feedback")
    }
    with store.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM loopml_alembic_version")).scalar()
            == ScriptDirectory.from_config(cfg).get_current_head()
        )
    with store.session() as session:
        old = session.get(Feedback, "old")
        assert old is not None and (old.label, old.key_id) == ("neutral", None)
    with store.engine.begin() as conn:  # and back down
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "key_id" not in {c["name"] for c in inspect(store.engine).get_columns("feedback")}
    store.dispose()


def test_labels_are_given_once_and_only_an_audited_relabel_changes_them(
    backend_settings: Settings, tmp_path: Path
) -> None:
    store = open_store(backend_settings.db_url)
    feedback = FeedbackStore(store, None, Metrics())
    a, b, c = predictions(store, 3)
    stored = feedback.record([(a, "negative"), (b, "positive")], "k-alice")
    assert [s["correct"] for s in stored] == [False, True]

    # A second label for a labelled id is refused, for the whole request (c stays unlabelled).
    with pytest.raises(ConflictError, match=f"already labelled: {a}") as err:
        feedback.record([(c, "neutral"), (a, "positive")], "k-mallory")
    assert err.value.http_status == 409
    with store.session() as session:
        assert session.get(Feedback, c) is None
        row = session.get(Feedback, a)
        assert row is not None and (row.label, row.key_id) == ("negative", "k-alice")

    frame = labeled_feedback(store, "sentiment")
    assert sorted(zip(frame["label"], frame["key_id"], strict=True)) == [
        ("negative", "k-alice"),
        ("positive", "k-alice"),
    ]

    with pytest.raises(RequestError, match="reason"):
        relabel(
            store, request_id=a, label="positive", reason=" ", actor="ops", model_name="sentiment"
        )
    with pytest.raises(NotFoundError, match="no feedback label"):
        relabel(
            store, request_id=c, label="positive", reason="x", actor="ops", model_name="sentiment"
        )
    with pytest.raises(RequestError, match="'angry'"):
        relabel(store, request_id=a, label="angry", reason="x", actor="ops", model_name="sentiment")
    out = relabel(
        store,
        request_id=a,
        label="positive",
        reason="ticket 7",
        actor="ops@host",
        model_name="sentiment",
    )
    assert out["previous"] == {"label": "negative", "key_id": "k-alice"}
    with store.session() as session:
        row = session.get(Feedback, a)
        assert row is not None and (row.label, row.key_id) == ("positive", "admin")
    entry = store.history("sentiment")[0]
    assert (entry.action, entry.actor, entry.reason) == ("feedback_relabel", "ops@host", "ticket 7")
    assert entry.details == {
        "request_id": a,
        "from_label": "negative",
        "to_label": "positive",
        "from_key_id": "k-alice",
    }
    store.dispose()


def test_cli_relabel(settings: Settings) -> None:
    store = open_store(settings.db_url)
    (rid,) = predictions(store, 1)
    FeedbackStore(store, None, Metrics()).record([(rid, "neutral")], "k-bob")
    store.dispose()
    runner = CliRunner()
    refused = runner.invoke(app, ["feedback", "relabel", rid, "negative"])
    assert refused.exit_code == 2 and "reason: required" in refused.output
    done = runner.invoke(
        app, ["feedback", "relabel", rid, "negative", "--reason", "typo", "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["previous"] == {"label": "neutral", "key_id": "k-bob"}
    history = json.loads(runner.invoke(app, ["history", "--json"]).stdout)
    assert history[0]["action"] == "feedback_relabel" and history[0]["reason"] == "typo"
    unknown = runner.invoke(app, ["feedback", "relabel", "nope", "negative", "--reason", "x"])
    assert unknown.exit_code == 2 and "no feedback label" in unknown.output
