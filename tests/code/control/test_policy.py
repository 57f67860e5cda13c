"""The retraining policy's decisions, on the numbers the demo and the benchmark measure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopml.config import Settings, load_settings
from loopml.control.policy import LearningGap, decide
from loopml.monitoring.quality import Quality
from loopml.monitoring.summary import MonitorSummary, Verdict, WindowInfo

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def s(settings: Settings) -> Settings:
    return load_settings(
        home=settings.home,
        retrain_min_labeled=200,
        retrain_min_new_labels=200,
        retrain_reachable_margin=0.03,
        retrain_cooldown_s=600,
    )


def summary(verdict: Verdict, reasons: list[str] | None = None) -> MonitorSummary:
    quality = Quality(300, 0.6, (0.55, 0.65), 0.564, (0.52, 0.6), 0.6, 100, "ok")
    window = WindowInfo(500, None, 500, 500, None, None, True)
    return MonitorSummary(
        "2026-01-01T12:00:00+00:00", "sentiment", "2", None, verdict, verdict == "drift",
        verdict == "quality_alarm", reasons or [], window, [], {}, quality, {},
    )  # fmt: skip


def gap(live: float, reachable: float, new: int = 600) -> LearningGap:
    return LearningGap(live, reachable, new, 0.03)


def test_alarm_rule_retrains_on_drift_with_enough_labels_and_waits_otherwise(s: Settings) -> None:
    drift = summary("drift", ["text drift: abs_text_content_drift 0.995 >= 0.6"])
    go = decide(drift, new_labels=250, last_retrain=None, now=NOW, settings=s)
    assert go.action == "retrain" and "text drift" in go.reason
    few = decide(drift, new_labels=150, last_retrain=None, now=NOW, settings=s)
    assert (few.action, few.reason.endswith("(150/200)")) == ("wait", True)
    recent = decide(
        drift, new_labels=250, last_retrain=NOW - timedelta(seconds=100), now=NOW, settings=s
    )
    assert recent.action == "wait" and "cooldown 600s" in recent.reason
    ok = decide(summary("ok"), new_labels=5000, last_retrain=None, now=NOW, settings=s)
    assert ok.action == "none"


def test_learning_rule_retrains_while_live_is_under_reachable_even_without_an_alarm(
    s: Settings,
) -> None:
    # The demo's numbers: 0.564 live after the first promotion, 0.703 with every label.
    for verdict in ("ok", "drift", "quality_alarm"):
        d = decide(
            summary(verdict), new_labels=600, last_retrain=None, now=NOW, settings=s,
            learned=True, learning=gap(0.564, 0.703),
        )  # fmt: skip
        assert d.action == "retrain", verdict
        assert d.numbers == {
            "live_macro_f1": 0.564,
            "reachable_macro_f1": 0.703,
            "gap": 0.139,
            "gap_ci": None,
            "new_labels": 600,
            "margin": 0.03,
            "window_macro_f1": None,
        }
        assert "0.139 under the reachable 0.703" in d.reason


def test_learning_rule_stops_once_live_quality_caught_up_even_on_drift(s: Settings) -> None:
    drift = summary("drift", ["text drift: abs_text_content_drift 0.700 >= 0.6"])
    for live in (0.68, 0.70, 0.73):  # gap 0.023, 0.003 and -0.027: all within the margin
        d = decide(
            drift, new_labels=900, last_retrain=None, now=NOW, settings=s,
            learned=True, learning=gap(live, 0.703),
        )  # fmt: skip
        assert d.action == "none" and d.reason.startswith("caught up"), live
        assert d.numbers["reachable_macro_f1"] == 0.703


def test_a_gap_over_the_margin_that_may_be_noise_does_not_retrain(s: Settings) -> None:
    # 0.034 over the margin, but its paired interval reaches under 0: a sample accident.
    noisy = LearningGap(0.607, 0.640, 400, 0.03, gap_ci=(-0.004, 0.071))
    d = decide(
        summary("ok"), new_labels=400, last_retrain=None, now=NOW, settings=s,
        learned=True, learning=noisy,
    )  # fmt: skip
    assert d.action == "none" and "not surely above 0" in d.reason
    assert d.numbers["gap_ci"] == [-0.004, 0.071]
    sure = LearningGap(0.507, 0.646, 1200, 0.03, gap_ci=(0.11, 0.17), window_macro_f1=0.51)
    d = decide(
        summary("ok"), new_labels=1200, last_retrain=None, now=NOW, settings=s,
        learned=True, learning=sure,
    )  # fmt: skip
    assert d.action == "retrain" and d.numbers["window_macro_f1"] == 0.51


def test_learning_rule_waits_for_new_labels_the_cooldown_and_a_live_measure(s: Settings) -> None:
    drift = summary("drift", ["text drift"])
    few = decide(drift, new_labels=150, last_retrain=None, now=NOW, settings=s, learned=True)
    assert few.action == "wait" and "new labels (150/200)" in few.reason
    # A learned champion never falls back to the alarm rule, drift or not.
    unmeasured = decide(drift, new_labels=900, last_retrain=None, now=NOW, settings=s, learned=True)
    assert unmeasured.action == "wait" and "not measured" in unmeasured.reason
    cooling = decide(
        drift, new_labels=900, last_retrain=NOW - timedelta(seconds=30), now=NOW, settings=s,
        learned=True, learning=gap(0.564, 0.703),
    )  # fmt: skip
    assert cooling.action == "wait" and "cooldown 600s" in cooling.reason
    assert cooling.numbers["gap"] == 0.139  # the numbers still go on the record
    later = decide(
        drift, new_labels=900, last_retrain=NOW - timedelta(seconds=601), now=NOW, settings=s,
        learned=True, learning=gap(0.564, 0.703),
    )  # fmt: skip
    assert later.action == "retrain"


def test_insufficient_data_never_retrains(s: Settings) -> None:
    d = decide(
        summary("insufficient_data"), new_labels=5000, last_retrain=None, now=NOW, settings=s,
        learned=True, learning=gap(0.4, 0.7),
    )  # fmt: skip
    assert d.action == "none"
