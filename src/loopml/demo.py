"""``loopml demo``: the closed loop on real tweets, end to end, in one command.

1. Train a champion on the non-airline tweets (validate > train > evaluate > gate > promote).
2. Start the real server (``loopml serve``) in a child process.
3. Replay a stream of held-out tweets with Poisson arrival times; feedback labels arrive late for
   a share of the requests. Half-way, traffic shifts to the airline domain the model never saw.
4. The controller (a thread here; a Deployment or CronJob in production) monitors, detects the
   drift, retrains on the original data plus the feedback, rolls the challenger out as a canary
   and promotes it when the live analysis passes.
5. Summary: macro-F1 on the stream before the shift, after it with the old model, and after the
   promotion, plus where the reports are and how to open the MLflow UI.

The demo runs in ``$LOOPML_HOME/demo`` (recreated each time) so it never touches your own models.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
from sklearn.metrics import f1_score

from loopml.config import Settings, load_settings
from loopml.data import Dataset, content_version, load_dataset
from loopml.errors import LoopmlError, ServingError

if TYPE_CHECKING:
    from loopml.control import Tick

__all__ = ["DemoPlan", "DemoResult", "StreamStats", "local_server", "run_demo"]


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and pace of one demo run."""

    champion_rows: int | None  # None: every non-airline tweet not kept for the stream
    before_shift: int
    max_after_shift: int
    after_promotion: int
    rate: float  # requests per second, Poisson arrivals
    feedback_share: float
    feedback_delay: int  # labels arrive this many requests later
    time_budget_s: float  # of the stream (a slow recipe's first training does not count)
    overrides: dict[str, Any] = field(default_factory=dict)
    # None: a random ``feedback_share`` of requests get labels; N: only what the label queue
    # picks, N labels in all (LOOPML_LABEL_BUDGET_PER_DAY), spread over the stream
    label_budget: int | None = None

    def on_label_budget(self, budget: int) -> DemoPlan:
        """This plan with labels from the label queue, ``budget`` in all: the loop's label
        thresholds scaled down so that it retrains and rolls out on that many."""
        loop = dict(self.overrides)
        loop["label_budget_per_day"] = budget
        for key, share, floor in (
            ("retrain_min_labeled", 0.6, 100),
            ("retrain_min_new_labels", 0.3, 50),
            ("rollout_min_labeled", 0.03, 10),
            ("monitor_min_labeled", 0.1, 10),
        ):
            if key in loop or key == "monitor_min_labeled":
                loop[key] = min(int(loop.get(key, 100)), max(floor, int(budget * share)))
        return replace(self, label_budget=budget, overrides=loop)

    @classmethod
    def full(cls) -> DemoPlan:
        """About three minutes on a 2-core machine."""
        return cls(
            champion_rows=None,
            before_shift=1500,
            # TF-IDF promotes ~3,000 airline tweets in; an encoder recipe (~40 req/s, minutes
            # to retrain) ~7,500: room for its after-promotion phase (14.6k airline tweets in all)
            max_after_shift=12000,
            after_promotion=1200,
            rate=120.0,
            feedback_share=0.5,
            feedback_delay=150,
            time_budget_s=420.0,
            overrides=_DEMO_LOOP
            | {
                "controller_interval_s": 3.0,
                "monitor_window": 500,
                "retrain_min_labeled": 1600,
                "rollout_step_min_s": 5.0,
                "rollout_min_requests": 60,
                "rollout_min_labeled": 40,
            },
        )

    @classmethod
    def fast(cls) -> DemoPlan:
        """The same story on less data, for tests."""
        return cls(
            champion_rows=8000,
            before_shift=700,
            max_after_shift=6000,
            after_promotion=500,
            rate=200.0,
            feedback_share=0.6,
            feedback_delay=60,
            time_budget_s=300.0,
            overrides=_DEMO_LOOP
            | {
                "controller_interval_s": 1.5,
                "monitor_window": 400,
                "monitor_sample_cap": 1500,
                "retrain_min_labeled": 1000,
                "rollout_step_min_s": 2.0,
                "rollout_min_requests": 40,
                "rollout_min_labeled": 25,
                # No parameter search: on little data and a short stream, a search's extra fits
                # (and its fall-back when a tuned version fails a slice) can use up the stream
                # before a retrain passes; tests/code/control/test_retrain_tune.py covers it.
                "retrain_tune_trials": 0,
            },
        )


# The loop's settings, sped up for a demo: monitor on every tick, short steps, and a looser
# latency budget (the laptop also trains while it serves two models on few cores).
_DEMO_LOOP: dict[str, Any] = {
    "monitor_interval_s": 0.0,
    "monitor_min_samples": 300,
    "retrain_cooldown_s": 60.0,
    "rollout_max_latency_ratio": 4.0,
    # a MiniLM model's single-text p99 is ~25 ms on a quiet 2-core machine; the demo's gate times
    # it while the same cores serve traffic
    "gate_max_p99_latency_ms": 200.0,
}


@dataclass
class StreamStats:
    """What the replay saw, phase by phase (for the live view and the summary)."""

    sent: int = 0
    failed: int = 0
    labels_sent: int = 0
    phase: str = "before shift"
    answers: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def macro_f1(self, phase: str, *, version: str | None = None) -> tuple[float | None, int]:
        """Macro-F1 and row count of the answers of ``phase`` (optionally of one version)."""
        rows = [
            a
            for a in self.answers
            if a["phase"] == phase and (version is None or a["version"] == version)
        ]
        if not rows:
            return None, 0
        score = f1_score([r["truth"] for r in rows], [r["label"] for r in rows], average="macro")
        return float(score), len(rows)


@dataclass
class DemoResult:
    """The three numbers of the story and where to look next."""

    champion_version: str
    champion_test_macro_f1: float
    promoted_version: str | None
    before_shift: tuple[float | None, int]
    after_shift_old_model: tuple[float | None, int]
    after_promotion: tuple[float | None, int]
    ticks: list[Tick]
    reports: list[str]
    home: Path
    seconds: float

    @property
    def recovered(self) -> bool:
        """Quality after promotion beats the old model on the shifted traffic."""
        old, new = self.after_shift_old_model[0], self.after_promotion[0]
        return old is not None and new is not None and new > old

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""

        def pair(v: tuple[float | None, int]) -> dict[str, Any]:
            return {"macro_f1": None if v[0] is None else round(v[0], 4), "requests": v[1]}

        return {
            "champion_version": self.champion_version,
            "champion_test_macro_f1": round(self.champion_test_macro_f1, 4),
            "promoted_version": self.promoted_version,
            "recovered": self.recovered,
            "before_shift": pair(self.before_shift),
            "after_shift_old_model": pair(self.after_shift_old_model),
            "after_promotion": pair(self.after_promotion),
            "reports": self.reports,
            "home": str(self.home),
            "seconds": round(self.seconds, 1),
            "controller": [t.to_dict() for t in self.ticks],
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _split_corpus(
    corpus: Dataset, plan: DemoPlan, seed: int
) -> tuple[Dataset, pd.DataFrame, pd.DataFrame]:
    frame = corpus.frame.sample(frac=1.0, random_state=seed)
    home = frame[frame["domain"] != "airline"]
    airline = frame[frame["domain"] == "airline"]
    stream_home, train_home = home.iloc[: plan.before_shift], home.iloc[plan.before_shift :]
    if plan.champion_rows is not None:
        train_home = train_home.iloc[: plan.champion_rows]
    train_home = train_home.sort_index()
    champion_data = Dataset("builtin:tweets[non-airline]", train_home, content_version(train_home))
    return champion_data, stream_home, airline.iloc[: plan.max_after_shift]


@contextlib.contextmanager
def local_server(settings: Settings, port: int | None = None) -> Iterator[str]:
    """Run ``loopml serve`` on loopback for ``settings``' embedded stores; yields its URL."""
    port = port or _free_port()
    env = os.environ | {"LOOPML_HOME": str(settings.home_dir), "LOOPML_RELOAD_INTERVAL_S": "1"}
    for key in ("LOOPML_TRACKING_URI", "LOOPML_DATABASE_URL"):
        env.pop(key, None)
    log = (settings.home_dir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopml", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServingError(f"the demo server exited; see {settings.home_dir}/server.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            raise ServingError("the demo server did not become ready within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class _Replay:
    """Sends the stream, delivers late labels, and stops once the loop has closed."""

    def __init__(self, url: str, plan: DemoPlan, stats: StreamStats, seed: int) -> None:
        self.url = url
        self.plan = plan
        self.stats = stats
        self.rng = random.Random(seed)
        self.pending: deque[tuple[int, str, str]] = deque()
        self.client = httpx.Client(base_url=url, timeout=10)
        self.settings: Settings | None = None  # with a label budget: the queue's database
        self.truth: dict[str, str] = {}

    def _feedback(self, force: bool = False) -> None:
        due = []
        while self.pending and (force or self.pending[0][0] <= self.stats.sent):
            due.append(self.pending.popleft())
        if due:
            body = [{"request_id": rid, "label": label} for _, rid, label in due]
            with contextlib.suppress(httpx.HTTPError):
                if self.client.post("/v1/feedback", json=body).status_code == 200:
                    self.stats.labels_sent += len(due)

    def send(self, text: str, truth: str) -> None:
        """One request at its Poisson arrival time; maybe schedule its label."""
        time.sleep(self.rng.expovariate(self.plan.rate))
        self.stats.sent += 1
        try:
            response = self.client.post("/v1/predict", json={"text": text})
            response.raise_for_status()
        except httpx.HTTPError:
            self.stats.failed += 1
            return
        body = response.json()
        answer = body["predictions"][0]
        self.stats.answers.append(
            {
                "phase": self.stats.phase,
                "version": body["model_version"],
                "variant": body["variant"],
                "label": answer["label"],
                "truth": truth,
            }
        )
        if self.plan.label_budget is not None:
            self.truth[answer["request_id"]] = truth
            if self.stats.sent % self.plan.feedback_delay == 0:
                self._queued()
        elif self.rng.random() < self.plan.feedback_share:
            self.pending.append(
                (self.stats.sent + self.plan.feedback_delay, answer["request_id"], truth)
            )
        self._feedback()

    def _queued(self) -> None:
        """Label what the label queue picks, the budget spread over the stream (so that labels
        remain for the canary): the annotator's answer is the tweet's true label, sent at once."""
        from loopml.labels.queue import take

        if self.settings is None or self.plan.label_budget is None:
            return
        expected = self.plan.before_shift + self.plan.max_after_shift / 2
        limit = max(1, math.ceil(self.plan.label_budget * self.plan.feedback_delay / expected))
        try:
            items = take(self.settings, model_name=self.settings.model_name, limit=limit,
                         holder="demo-annotator")  # fmt: skip
        except LoopmlError:
            return  # the database is busy: the next round asks again
        for item in items:
            if item.request_id in self.truth:
                self.pending.append((0, item.request_id, self.truth.pop(item.request_id)))

    def close(self) -> None:
        """Deliver the labels still pending and close the connection."""
        self._feedback(force=True)
        self.client.close()


def _champion(
    settings: Settings,
    data: Dataset,
    say: Callable[[str], None],
    recipe: str | None,
    params: Mapping[str, Any] | None,
) -> tuple[str, float]:
    from loopml.control.promotion import promote
    from loopml.pipeline.train import train
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    say("training the champion on non-airline tweets")
    # The demo's home starts empty: None means the default recipe. Its retrains reuse whatever
    # recipe and parameters this champion was trained with.
    result = train(
        settings,
        dataset=data,
        recipe=recipe,
        params=params,
        progress=lambda step: say(f"champion: {step}"),
        run_name="demo-champion",
    )
    if not result.gate.passed:
        failed = ", ".join(c.name for c in result.gate.failures())
        raise LoopmlError(f"the demo champion failed its gate ({failed})")
    with open_settings_store(settings) as store:
        promote(store, Registry(settings), result.version, reason="demo: first champion")
    return result.version, result.evaluation.metrics["macro_f1"]


def run_demo(
    base: Settings,
    *,
    fast: bool = False,
    recipe: str | None = None,
    params: Mapping[str, Any] | None = None,
    time_budget_s: float | None = None,
    label_budget: int | None = None,
    progress: Callable[[str], None] | None = None,
    on_update: Callable[[StreamStats, list[Tick]], None] | None = None,
) -> DemoResult:
    """Run the whole closed-loop scenario and return its summary; the first champion is trained
    with ``recipe`` and ``params`` (default: the default recipe), every retrain reuses them.
    ``time_budget_s`` replaces the plan's limit on the stream's duration. ``label_budget``: only
    the predictions the label queue picks get labels, that many in all (default: a random share
    of all requests)."""
    from loopml.control import Controller
    from loopml.store import open_settings_store

    say = progress or (lambda _msg: None)
    plan = DemoPlan.fast() if fast else DemoPlan.full()
    if time_budget_s is not None:
        plan = replace(plan, time_budget_s=time_budget_s)
    if label_budget is not None:
        plan = plan.on_label_budget(label_budget)
    home = base.home_dir / "demo"
    shutil.rmtree(home, ignore_errors=True)
    # Embedded stores only, whatever the caller's environment points at: never production.
    settings = load_settings(
        home=home, tracking_uri=None, database_url=None, **plan.overrides
    ).prepare()
    started = time.monotonic()
    say("loading builtin:tweets")
    champion_data, stream_home, stream_airline = _split_corpus(
        load_dataset("builtin:tweets"), plan, settings.seed
    )
    champion, champion_f1 = _champion(settings, champion_data, say, recipe, params)
    ticks: list[Tick] = []
    stats = StreamStats()
    stop = threading.Event()

    def record(tick: Tick) -> None:
        ticks.append(tick)

    promoted: str | None = None
    with (
        _sigterm_as_exit(),
        open_settings_store(settings) as store,
        local_server(settings) as url,
    ):
        loop = Controller(settings, store, on_tick=record)
        thread = threading.Thread(target=loop.run, kwargs={"stop": stop}, daemon=True)
        say(f"serving version {champion} at {url}; replaying the stream")
        replay = _Replay(url, plan, stats, settings.seed)
        replay.settings = settings
        stats.started = time.monotonic()
        thread.start()
        try:
            promoted = _play(
                replay,
                stats,
                stream_home,
                stream_airline,
                plan,
                ticks,
                stats.started,
                lambda: on_update(stats, ticks) if on_update else None,
            )
        finally:
            replay.close()
            stop.set()
            _finish_step(thread, say)
            _close_split(settings, store)
    reports = sorted(str(p) for p in settings.reports_dir.glob("*.html"))
    return DemoResult(
        champion_version=champion,
        champion_test_macro_f1=champion_f1,
        promoted_version=promoted,
        before_shift=stats.macro_f1("before shift"),
        after_shift_old_model=stats.macro_f1("after shift", version=champion),
        after_promotion=stats.macro_f1("after promotion"),
        ticks=ticks,
        reports=reports,
        home=home,
        seconds=time.monotonic() - started,
    )


def _finish_step(thread: threading.Thread, say: Callable[[str], None]) -> None:
    """Wait for the stopped controller ``thread`` to end its tick: a retrain cut short would leave
    a half-written MLflow run behind. Ctrl-C (or SIGTERM) while waiting leaves at once."""
    thread.join(timeout=5)
    if thread.is_alive():
        say("waiting for the controller to finish its step (a retrain can take minutes)")
        thread.join()


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (``kill``, a CI timeout) unwinds like Ctrl-C, so the demo's server child is
    stopped and its rollout closed instead of left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _close_split(settings: Settings, store: Any) -> None:
    """With the controller stopped, nobody attends a rollout still running: end it."""
    from loopml import control
    from loopml.registry import Registry
    from loopml.routing import load_routing

    if load_routing(store, settings.model_name).rollout is not None:
        control.abort_rollout(
            settings, store, Registry(settings), reason="demo finished: its controller stopped"
        )


def _promotion(ticks: list[Tick]) -> str | None:
    for tick in ticks:
        if tick.action == "rollout_promote" and tick.step is not None:
            return tick.step.routing.champion
    return None


def _play(
    replay: _Replay,
    stats: StreamStats,
    home: pd.DataFrame,
    airline: pd.DataFrame,
    plan: DemoPlan,
    ticks: list[Tick],
    started: float,
    update: Callable[[], None],
) -> str | None:
    for text, label in home[["text", "label"]].itertuples(index=False):
        replay.send(text, label)
        update()
    stats.phase = "after shift"
    promoted, after = None, 0
    for text, label in airline[["text", "label"]].itertuples(index=False):
        if promoted is None and (promoted := _promotion(ticks)) is not None:
            stats.phase = "after promotion"
        if promoted is not None:
            after += 1
        if after > plan.after_promotion or time.monotonic() - started > plan.time_budget_s:
            break
        replay.send(text, label)
        update()
    return promoted
