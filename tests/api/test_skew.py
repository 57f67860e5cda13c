"""Training/serving skew (ML Test Score, Monitoring 3): what a real server logged is recomputed
with the registered model; equal probabilities pass, tampered ones fail (library and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from serving_helpers import Server, TrainedRegistry, wait_for
from sqlalchemy import select, update
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings, load_settings
from loopml.monitoring.skew import check_skew
from loopml.store import Prediction, open_store

pytestmark = pytest.mark.slow


def _logged(settings: Settings) -> int:
    with open_store(settings.db_url) as store, store.session() as session:
        return len(session.scalars(select(Prediction.request_id)).all())


def _cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, dict]:
    monkeypatch.setenv("LOOPML_HOME", str(settings.home))
    monkeypatch.setenv("LOOPML_TRACKING_URI", settings.mlflow_uri)
    monkeypatch.setenv("LOOPML_MODEL_NAME", settings.model_name)
    result = CliRunner().invoke(app, ["check", "skew", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def test_served_predictions_match_the_registered_model_and_tampering_is_found(
    trained: TrainedRegistry, make_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: Server = make_server(predlog_flush_interval_s=0.05)
    name = server.env["LOOPML_MODEL_NAME"]
    texts = trained.texts[:120]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # Batches and single texts: the batcher groups them differently, the numbers must not move.
        http.post("/v1/predict", json={"texts": texts[:100]}).raise_for_status()
        for text in texts[100:]:
            http.post("/v1/predict", json={"text": text}).raise_for_status()
    settings = load_settings(
        home=Path(server.env["LOOPML_HOME"]),
        tracking_uri=trained.tracking_uri,
        model_name=name,
    )
    wait_for(lambda: _logged(settings) == 120, 30, "120 logged predictions")

    report = check_skew(settings, sample=500)
    assert report.passed, report.to_dict()
    assert report.rows == 120 and report.model_version == "1"
    assert report.max_abs_diff < 1e-6
    assert (report.share_above, report.label_mismatches, report.worst) == (0.0, 0, [])
    code, body = _cli(settings, monkeypatch, "--version", "1", "--sample", "50")
    assert (code, body["passed"], body["rows"]) == (0, True, 50)

    # Serving that ran another preprocessing would log other numbers: fake it on 3 rows.
    with open_store(settings.db_url) as store, store.session() as session:
        rows = session.scalars(select(Prediction).order_by(Prediction.ts).limit(3)).all()
        tampered = {r.request_id for r in rows}
        for row in rows:
            probs = {k: round(v, 2) for k, v in row.probabilities.items()}
            session.execute(
                update(Prediction)
                .where(Prediction.request_id == row.request_id)
                .values(probabilities=probs)
            )
    report = check_skew(settings, sample=500)
    assert not report.passed
    assert 1e-6 < report.max_abs_diff <= 0.005 + 1e-9  # rounding to 2 decimals moves <= 0.005
    assert report.share_above == pytest.approx(3 / 120)
    assert {w["request_id"] for w in report.worst} == tampered
    code, body = _cli(settings, monkeypatch)
    assert (code, body["passed"], body["rows"]) == (1, False, 120)
