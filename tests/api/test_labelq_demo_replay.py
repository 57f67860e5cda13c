"""The demo's stream on a label budget, against a real server: labels go only to what the label
queue picked, no more than the budget, through ``POST /v1/feedback``."""

from __future__ import annotations

from typing import Any

from loopml.config import load_settings
from loopml.demo import DemoPlan, StreamStats, _Replay
from loopml.store import Feedback, LabelLease, open_store


def test_replay_labels_only_what_the_queue_picks(make_server: Any) -> None:
    server = make_server(predlog_flush_interval_s=0.05, label_budget_per_day=12)
    plan = DemoPlan.fast().on_label_budget(12)
    # 60 requests expected: 6 labels a round of 10, until the budget of 12 is spent
    sizes = {"before_shift": 0, "max_after_shift": 120, "feedback_delay": 10, "rate": 500.0}
    plan = DemoPlan(**{**plan.__dict__, **sizes})
    settings = load_settings(
        home=server.home, model_name=server.env["LOOPML_MODEL_NAME"], label_budget_per_day=12
    )
    stats = StreamStats()
    replay = _Replay(server.url, plan, stats, seed=1)
    replay.settings = settings
    for i in range(60):
        replay.send(f"the flight {i} was {'late' if i % 2 else 'on time'}", "negative")
    replay.close()
    with open_store(settings.db_url) as store, store.session() as session:
        labelled = list(session.query(Feedback))
        leases = list(session.query(LabelLease))
    assert stats.labels_sent == len(labelled) == 12  # the budget, not half of 60
    assert len(stats.answers) == 60
    # every label went to an item the queue leased to the demo's annotator (a label ends it)
    assert all(f.request_id not in replay.truth for f in labelled)
    assert not [lease for lease in leases if lease.holder != "demo-annotator"]
    assert plan.overrides["retrain_min_labeled"] == 100  # scaled down to the budget
