"""ML Test Score, Model 2: the agreement of offline and live deltas across rollouts, read from
the audit records of ended rollouts in a real SQLite database (sign share, Pearson r, the last K,
the alarm), as the library, the gauges and `loopml check offline-online` report it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.monitoring import MonitorCollector
from loopml.monitoring.offline_online import OFFLINE_ONLINE_KEY, agreement
from loopml.store import Store, open_store

# (offline delta, live delta) of five rollouts, oldest first: the newest four disagree in sign
# three times.
PAIRS = [(0.03, 0.02), (0.04, -0.01), (-0.02, 0.03), (0.01, 0.02), (0.05, -0.04)]


def _end(store: Store, action: str, offline: float | None, live: float | None) -> None:
    pair = {"offline_delta": offline, "live_delta": live, "notes": None}
    store.audit(
        actor="test",
        action=action,
        model_name="sentiment",
        from_version="1",
        to_version="2",
        details={"mode": "canary", OFFLINE_ONLINE_KEY: pair},
    )


def _fill(store: Store) -> None:
    for i, (offline, live) in enumerate(PAIRS):
        _end(store, "rollout_promote" if live > 0 else "rollout_rollback", offline, live)
        if i == 2:
            # an operator's abort is not a measured end; a rollback with too few labels has no
            # live delta: neither counts as a point
            _end(store, "rollout_abort", 0.5, 0.5)
            _end(store, "rollout_rollback", 0.02, None)


@pytest.fixture
def store(backend_settings: Settings) -> Iterator[Store]:
    """Real SQLite, then real PostgreSQL."""
    with open_store(backend_settings.db_url) as opened:
        _fill(opened)
        yield opened


def test_sign_agreement_correlation_and_alarm_over_the_last_rollouts(store: Store) -> None:
    everything = agreement(store, "sentiment", last=10)
    assert len(everything.pairs) == 6  # five measured ends and the one without live labels
    assert (everything.points, everything.agreeing) == (5, 2)
    assert everything.sign_agreement == pytest.approx(2 / 5)
    offline, live = np.array(PAIRS).T
    assert everything.correlation == pytest.approx(float(np.corrcoef(offline, live)[0, 1]))
    assert everything.alarm  # 3 of 5 disagree

    # The newest four ends: the rollback without live labels and three measured pairs, of
    # which two disagree.
    recent = agreement(store, "sentiment", last=4)
    assert [p.live_delta for p in recent.pairs] == [-0.04, 0.02, None, 0.03]
    assert (recent.points, recent.agreeing, recent.alarm) == (3, 1, True)
    last_two = agreement(store, "sentiment", last=2)
    assert (last_two.points, last_two.alarm) == (2, False)  # too few to say
    assert last_two.correlation is None
    assert agreement(store, "other-model", last=10).pairs == []


def test_the_gauges_and_the_cli_report_it(
    store: Store, backend_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gauges = {
        f.name: f.samples[0].value
        for f in MonitorCollector(store, "sentiment", rollouts=3).collect()
    }
    # last 3: (0.05, -0.04), (0.01, 0.02), the rollback without live labels
    assert gauges["loopml_offline_online_points"] == 2
    assert gauges["loopml_offline_online_sign_agreement"] == 0.5
    assert "loopml_offline_online_correlation" not in gauges
    empty = {f.name for f in MonitorCollector(store, "other-model").collect()}
    assert empty == set()  # no rollout ended: no gauge (and no error)

    monkeypatch.setenv("LOOPML_HOME", str(backend_settings.home))
    result = CliRunner().invoke(app, ["check", "offline-online", "--json"])
    assert result.exit_code == 1, result.output  # 3 of 5 measured rollouts disagree
    body = json.loads(result.stdout)
    assert (body["rollouts"], body["points"], body["agreeing"], body["alarm"]) == (6, 5, 2, True)
    assert [p["agrees"] for p in body["pairs"]] == [False, True, None, False, False, True]
    result = CliRunner().invoke(app, ["check", "offline-online", "--last", "2"])
    assert result.exit_code == 0, result.output
    assert "2 measured rollout(s): sign agreement 50%" in result.stdout
    assert "needs 3" in result.stdout
    bad = CliRunner().invoke(app, ["check", "offline-online", "--last", "0"])
    assert bad.exit_code == 2
