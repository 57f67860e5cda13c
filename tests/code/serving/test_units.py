"""Unit tests of the serving internals: batcher, journal, writer, auth, parsing, loader."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from starlette.datastructures import Headers

from loopml.config import load_settings
from loopml.errors import LoopmlError, ServingError
from loopml.recipes.base import TextClassifier
from loopml.serving.auth import Guard
from loopml.serving.batcher import Batcher, QueueFullError
from loopml.serving.loader import LoadedModel, build_manifest, verify_manifest, warm_up
from loopml.serving.metrics import Metrics
from loopml.serving.oip import InferRequest, parse_infer
from loopml.serving.predlog import Journal, PredictionLog, parse, read_lines
from loopml.serving.routes.predict import parse_predict
from loopml.store import open_store


class Echo(TextClassifier):
    """Class 'long' for texts over 5 characters; records the size of every call."""

    classes = ["long", "short"]

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay

    def predict_proba(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(len(texts))
        time.sleep(self.delay)
        p = np.array([[0.9, 0.1] if len(t) > 5 else [0.2, 0.8] for t in texts])
        return p


def model(classifier: TextClassifier, version: str = "1") -> LoadedModel:
    return LoadedModel("m", version, "champion", classifier, tuple(classifier.classes))


# -- batcher -----------------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls() -> None:
    clf = Echo(delay=0.02)

    async def main() -> list[str]:
        batcher = Batcher(Metrics(), None, max_batch_size=64, max_queue_size=1000)
        batcher.start()
        m = model(clf)
        results = await asyncio.gather(*(batcher.submit(m, [f"text {i:03d}"]) for i in range(50)))
        await batcher.close()
        return [r.answers[0].label for r in results]

    labels = asyncio.run(main())
    assert labels == ["long"] * 50
    assert sum(clf.calls) == 50
    assert len(clf.calls) < 10  # batched, not one call per request
    assert max(clf.calls) <= 64


def test_an_idle_model_answers_a_lone_request_at_once() -> None:
    async def main() -> float:
        batcher = Batcher(Metrics(), None, max_batch_size=64, max_queue_size=10)
        batcher.start()
        t0 = time.perf_counter()
        await batcher.submit(model(Echo()), ["hello"])
        elapsed = time.perf_counter() - t0
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < 0.05


def test_a_full_queue_refuses_instead_of_waiting() -> None:
    async def main() -> None:
        batcher = Batcher(Metrics(), None, max_batch_size=4, max_queue_size=5)
        batcher.start()
        m = model(Echo(delay=0.05))
        first = asyncio.ensure_future(batcher.submit(m, ["a"] * 5))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await batcher.submit(m, ["b"])
        await first
        await batcher.close()

    asyncio.run(main())


def test_big_requests_are_split_and_keep_order() -> None:
    clf = Echo()

    async def main() -> list[str]:
        batcher = Batcher(Metrics(), None, max_batch_size=8, max_queue_size=100)
        batcher.start()
        texts = ["x" * (i % 10) for i in range(20)]
        result = await batcher.submit(model(clf), texts)
        await batcher.close()
        return [a.label for a in result.answers]

    labels = asyncio.run(main())
    assert labels == ["long" if i % 10 > 5 else "short" for i in range(20)]
    assert max(clf.calls) <= 8


# -- journal and writer ------------------------------------------------------------------------


def _log(tmp_path: Path, **kw: object) -> tuple[PredictionLog, sa.Engine]:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    plog = PredictionLog(
        tmp_path / "spool", store.engine, Metrics(), batch_size=100, flush_interval_s=0.05, **kw
    )  # type: ignore[arg-type]
    return plog, store.engine


def _record(rid: str) -> bytes:
    import orjson

    rec = {
        "request_id": rid,
        "ts": time.time(),
        "model_name": "m",
        "model_version": "1",
        "variant": "champion",
        "text": "t",
        "text_hash": "0" * 64,
        "text_length": 1,
        "label": "a",
        "probabilities": {"a": 1.0},
        "latency_ms": 1.0,
    }
    return orjson.dumps(rec) + b"\n"


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from predictions")).scalar_one())


def test_writer_commits_in_batches_and_removes_segments(tmp_path: Path) -> None:
    plog, engine = _log(tmp_path)
    plog.start()
    for i in range(10):
        ids = [f"r{i}-{j}" for j in range(30)]
        plog.record(b"".join(_record(rid) for rid in ids), [(rid, "a") for rid in ids], ["a"])
    assert plog.flush(10)
    assert _count(engine) == 300
    assert plog.served == plog.written == 300 and plog.backlog == 0
    assert plog.drain(10)
    assert list((tmp_path / "spool").iterdir()) == []


def test_orphan_segments_are_replayed_idempotently(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    dead = Journal(spool)  # a process that "dies": its lock is released, segments stay
    dead.append(b"".join(_record(f"d{i}") for i in range(50)) + b'{"request_id": "torn')
    dead.close()
    dead.release(delete_lock=False)
    plog, engine = _log(tmp_path)
    plog.start()
    deadline = time.monotonic() + 20
    while plog.replay_dead_letter < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plog.replayed == 50 and plog.replay_dead_letter == 1
    assert _count(engine) == 50
    assert not list(spool.glob(f"{dead.owner}*"))
    plog.drain(10)


def test_a_live_process_journal_is_not_taken(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    live = Journal(spool)
    live.append(_record("live-1"))
    plog, engine = _log(tmp_path)
    plog.start()
    time.sleep(0.5)
    assert _count(engine) == 0
    plog.drain(10)
    live.close()
    live.release(delete_lock=False)


def test_read_lines_stops_at_the_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "seg"
    path.write_bytes(b"a\nbb\nccc")
    assert read_lines(path, 0, 10) == ([b"a", b"bb"], 5)
    assert read_lines(path, 5, 10) == ([], 5)
    assert read_lines(path, 0, 1) == ([b"a"], 2)
    long = b"x" * 100_000  # longer than one read: read to its end, never skipped
    path.write_bytes(long + b"\nz\n")
    assert read_lines(path, 0, 1) == ([long], len(long) + 1)


# -- auth and parsing --------------------------------------------------------------------------


def test_guard() -> None:
    guard = Guard(load_settings(admin_token="admin-secret-123456", api_keys="k1,k2"))
    guard.admin(Headers({"authorization": "Bearer admin-secret-123456"}))
    guard.client(Headers({"x-api-key": "k2"}))
    guard.client(Headers({"authorization": "bearer k1"}))
    for headers, status in (
        ({}, 401),
        ({"authorization": "Bearer nope"}, 403),
        ({"authorization": "Basic k1"}, 401),
    ):
        with pytest.raises(LoopmlError) as err:
            guard.client(Headers(headers))
        assert err.value.http_status == status
    with pytest.raises(LoopmlError) as err:
        Guard(load_settings()).admin(Headers({"authorization": "Bearer x"}))
    assert err.value.http_status == 404


def test_parse_predict_and_infer() -> None:
    settings = load_settings(max_text_chars=10, max_texts_per_request=3)
    assert parse_predict(b'{"text": "hi"}', settings) == ["hi"]
    assert parse_predict(b'{"texts": ["a", "b"], "text": null}', settings) == ["a", "b"]
    with pytest.raises(LoopmlError, match="texts: 4 texts"):
        parse_predict(b'{"texts": ["a", "b", "c", "d"]}', settings)

    class R:
        pass

    runtime = R()
    runtime.settings = settings  # type: ignore[attr-defined]
    body = (
        b'{"id": "7", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",'
        b' "data": ["a", "b"]}], "outputs": [{"name": "label"}]}'
    )
    parsed = parse_infer(body, runtime)  # type: ignore[arg-type]
    assert parsed == InferRequest("7", ["a", "b"], [("label", False)])


# -- loader checks -----------------------------------------------------------------------------


def test_manifest_detects_changes(tmp_path: Path) -> None:
    import json

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.bin").write_bytes(b"abc")
    (tmp_path / "manifest.json").write_text(json.dumps(build_manifest(tmp_path / "model")))
    assert verify_manifest(tmp_path) == tmp_path / "model"
    (tmp_path / "model" / "a.bin").write_bytes(b"abd")
    with pytest.raises(ServingError, match="does not match"):
        verify_manifest(tmp_path)


def test_warm_up_rejects_bad_models() -> None:
    class NaN(Echo):
        def predict_proba(self, texts):  # type: ignore[no-untyped-def]
            return np.full((len(texts), 2), np.nan)

    class Boom(Echo):
        def predict_proba(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    warm_up(Echo(), ("long", "short"))
    with pytest.raises(ServingError, match="not finite"):
        warm_up(NaN(), ("long", "short"))
    with pytest.raises(ServingError, match="boom"):
        warm_up(Boom(), ("long", "short"))
    with pytest.raises(ServingError, match="distinct"):
        warm_up(Echo(), ("a", "a"))


def test_no_threads_or_files_at_import() -> None:
    before = threading.active_count()
    import importlib

    import loopml.serving.app

    importlib.reload(loopml.serving.app)
    assert threading.active_count() == before


def test_failure_details_never_carry_texts() -> None:
    from loopml.serving.batcher import describe_failure

    text = 'he said "don\'t" \\ and left'
    for exc in (KeyError(text), RuntimeError(f"bad input {text!r}"), ValueError(text)):
        detail = describe_failure(exc, [text, "other"])
        assert "don" not in detail, detail
        assert detail.startswith(type(exc).__name__ + ": ")
        assert "<text>" in detail
    assert describe_failure(RuntimeError(), ["x"]) == "RuntimeError"
    assert len(describe_failure(RuntimeError("y" * 5000), [])) == 500


def test_live_stats_window() -> None:
    from loopml.serving.livestats import LiveStats

    live = LiveStats(window=10)
    for i in range(100):
        live.observe("champion", 0.001 * (i + 1), now=1002.5)
    live.observe("challenger", 0.5, now=1005.2)
    live.observe("champion", 0.002, now=1011.0)  # the current second: not reported yet
    snap = live.snapshot(now=1011.9)
    assert snap["end"] == 1011 and snap["window_s"] == 10
    champion = snap["variants"]["champion"]
    assert len(champion["rps"]) == 10 and champion["rps"][-1] == 0
    # One value per second from 1001 to 1010: the 100 answers of second 1002 are at index 1.
    assert champion["rps"][1] == 100 and champion["total"] == 100
    assert champion["p99_ms"][1] == 99.0 and champion["p99_ms"][0] is None
    assert snap["variants"]["challenger"]["rps"][4] == 1
    assert LiveStats().snapshot()["variants"] == {}


def test_dead_man_switch() -> None:
    from datetime import UTC, datetime, timedelta

    from loopml.routing import Routing, effective_mode, lease_expired

    now = datetime.now(UTC)

    def routing(beat: object, mode: str = "canary") -> Routing:
        return Routing("m", "1", "2", mode, 0.5, None, {"rollout": {"heartbeat_at": beat}})  # type: ignore[arg-type]

    assert effective_mode(routing(now.isoformat()), 60, now) == "canary"
    assert effective_mode(routing(now.isoformat(), "shadow"), 60, now) == "shadow"
    old = (now - timedelta(seconds=61)).isoformat()
    assert lease_expired(routing(old), 60, now) and effective_mode(routing(old), 60, now) == "none"
    assert effective_mode(routing("garbage"), 60, now) == "none"
    naive = (now - timedelta(seconds=5)).replace(tzinfo=None).isoformat()
    assert effective_mode(routing(naive), 60, now) == "canary"
    assert effective_mode(Routing("m", "1", "2", "canary", 0.5), 60, now) == "none"  # no rollout


def _batch_line(texts: list[str], *, log_text: bool = True) -> bytes:
    """The journal line a Batcher writes for one batch of ``texts``."""
    out: dict[str, list[bytes]] = {}

    class Log:
        def record(self, data: bytes, entries: object, classes: object, model: str = "") -> None:
            out.setdefault("lines", []).append(data)

    async def go() -> None:
        model = LoadedModel("m", "1", "champion", Echo(), ("long", "short"))
        batcher = Batcher(
            Metrics(),
            Log(),
            max_batch_size=64,
            max_queue_size=100,
            log_text=log_text,  # type: ignore[arg-type]
        )
        batcher.start()
        await batcher.submit(model, texts)
        await batcher.close()

    asyncio.run(go())
    assert len(out["lines"]) == 1, "one journal line per model batch"
    return out["lines"][0]


def test_a_batch_is_journaled_as_one_line_that_expands_to_one_record_per_text() -> None:
    import hashlib

    line = _batch_line(["a long text", "tiny"])
    rows, bad = parse([line])
    assert bad == [] and [r["text"] for r in rows] == ["a long text", "tiny"]
    assert [r["label"] for r in rows] == ["long", "short"]
    assert rows[1]["probabilities"] == {"long": 0.2, "short": 0.8}
    assert rows[0]["text_hash"] == hashlib.sha256(b"a long text").hexdigest()
    assert [r["text_length"] for r in rows] == [11, 4]
    assert len({r["request_id"] for r in rows}) == 2
    hidden, _ = parse([_batch_line(["a long text"], log_text=False)])
    assert hidden[0]["text"] is None and hidden[0]["text_hash"] == rows[0]["text_hash"]


def test_a_malformed_batch_line_is_refused_whole_and_counted_by_its_records() -> None:
    import orjson

    rec = orjson.loads(_batch_line(["a long text", "tiny", "third one"]))
    rec["label"] = rec["label"][:2]  # a column one value short
    rows, bad = parse([orjson.dumps(rec), _record("ok")])
    assert [r["request_id"] for r in rows] == ["ok"]
    assert [(reason, count) for _line, reason, count in bad] == [
        ("'label' does not hold 3 values", 3)
    ]
    rec["label"] = ["long", 7, "long"]  # a value of the wrong type
    _, bad = parse([orjson.dumps(rec)])
    assert bad[0][1:] == ("'label' is int", 3)
