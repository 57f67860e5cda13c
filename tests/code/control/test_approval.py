"""Model 1 of the ML Test Score: what reaches production was reviewed. A version whose parameters
differ from the champion's cannot start a rollout or be promoted (forced or not) until an admin
approves it, recorded with who and when; a version with the champion's parameters needs nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.control.approval import (
    APPROVED_AT_TAG,
    APPROVED_BY_TAG,
    APPROVED_SPEC_TAG,
    check_approved,
    spec_change,
)
from loopml.control.promotion import promote
from loopml.control.releases import release
from loopml.control.rollout import abort, start
from loopml.data import Dataset
from loopml.errors import ApprovalRequiredError
from loopml.pipeline.train import train
from loopml.registry import CHAMPION, RECIPE_PARAMS_TAG, Registry
from loopml.routing import load_routing
from loopml.store import AuditEntry, Store, open_store

runner = CliRunner()


def cli(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    parsed = json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None
    return result.exit_code, parsed, result.stdout + result.stderr


def _champion(registry: Registry) -> str:
    mv = registry.alias(CHAMPION)
    assert mv is not None
    return str(mv.version)


def _audits(store: Store, action: str) -> list[AuditEntry]:
    with store.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


@pytest.mark.slow
def test_changed_parameters_need_an_admins_recorded_approval(
    settings: Settings, small_tweets: Dataset
) -> None:
    registry = Registry(settings)
    store = open_store(settings.db_url)
    first = train(settings, dataset=small_tweets).version  # defaults, no champion yet
    assert release(settings, store, registry, first, reason="first").how == "first_champion"
    same = train(settings, dataset=small_tweets).version  # the champion's recipe and params
    changed = train(settings, dataset=small_tweets, params={"C": "1.5", "min_df": "3"}).version

    assert spec_change(registry, registry.version(same)) is None
    assert spec_change(registry, registry.version(changed)) == {
        "champion": first,
        "params": {"C": [4.0, 1.5], "min_df": [2, 3]},
    }
    # Unreviewed: neither a canary (live traffic) nor a promotion, not even a forced one.
    with pytest.raises(ApprovalRequiredError, match=r"C 4.0 -> 1.5, min_df 2 -> 3"):
        start(settings, store, registry, changed, mode="canary", force=True, reason="try it")
    assert load_routing(store, registry.name).challenger is None
    with pytest.raises(ApprovalRequiredError, match=f"loopml approve {changed} --by NAME"):
        promote(store, registry, changed, force=True, reason="ship it")
    assert _champion(registry) == first
    code, _, out = cli("promote", changed, "--direct", "--reason", "ship it")
    assert code == 1 and "must review and approve" in out and _champion(registry) == first

    # The champion's own parameters go through without anyone's approval.
    check_approved(registry, registry.version(same))
    promote(store, registry, same, force=True, reason="same spec")
    assert _champion(registry) == same
    with pytest.raises(ApprovalRequiredError):  # still a change against the new champion
        promote(store, registry, changed, force=True, reason="ship it")

    assert cli("approve", changed, "--by", " ")[0] == 2
    assert cli("approve", "999", "--by", "alice")[0] == 2
    code, record, out = cli("approve", changed, "--by", "alice", "--json")
    assert code == 0, out
    assert (record["by"], record["version"], record["params"]["C"]) == ("alice", changed, 1.5)
    tags = registry.version(changed).tags
    assert tags[APPROVED_BY_TAG] == "alice" and tags[APPROVED_AT_TAG] == record["at"]
    assert tags[APPROVED_SPEC_TAG] == record["spec"]
    [entry] = _audits(store, "approve")
    assert (entry.to_version, entry.from_version) == (changed, same)
    assert entry.details["by"] == "alice" and entry.details["change"]["params"]["C"] == [4.0, 1.5]
    assert entry.actor == record["actor"] and entry.actor  # who ran the command, too

    # The approval names the exact spec: parameters re-tagged afterwards are not approved.
    recorded = tags[RECIPE_PARAMS_TAG]
    registry.set_tags(changed, {RECIPE_PARAMS_TAG: json.dumps(record["params"] | {"C": 0.5})})
    with pytest.raises(ApprovalRequiredError):
        check_approved(registry, registry.version(changed))
    registry.set_tags(changed, {RECIPE_PARAMS_TAG: recorded})

    start(settings, store, registry, changed, mode="canary", force=True, reason="reviewed")
    abort(settings, store, registry, reason="done looking")
    promote(store, registry, changed, force=True, reason="reviewed by alice")
    assert _champion(registry) == changed
    store.dispose()
