"""Reviewed specs (ML Test Score, Model 1): a changed recipe or parameters need an admin's approval.

A version trained with the champion's recipe and parameters (every retrain the controller starts)
goes through the gate and the canary as before. A version whose recipe or parameters differ
from the champion's (``loopml train -p``, ``--tune``, ``--recipe``) cannot start a rollout or be
promoted until an admin approves it: ``loopml approve VERSION --by NAME`` or
``POST /v1/admin/approve``. The approval names who approved, when and the exact spec (a digest of
recipe and parameters); it is written to the audit log and as version tags. A model's first
version has no champion to differ from: whoever promotes it ships the spec.

One change is approved by policy instead (ML Test Score, Model 3: tuning inside the loop): the
controller's retrain searches the recipe's declared search space from the champion's parameters
(:mod:`loopml.control.retrain`), and the parameters its search chose are recorded as approved by
``policy:retrain-tune`` with a fingerprint of that space. The space is code (the recipe's
``search_space``, reviewed as code is, and traced by the run's code tags); the loop only picks a
point in it, and the gate and the canary still judge the model. The approval holds only while it
stays inside that: same recipe, only parameters the space tunes changed, every new value inside
its bounds, the space unchanged since (same fingerprint), and a retrain run. A hand-set change
(``-p``, ``--tune``, another recipe) still needs a human.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from loopml.errors import ApprovalRequiredError, RegistryError, RequestError, TrainingError
from loopml.pipeline.tune import SearchSpace, declared_space
from loopml.recipes import get_recipe
from loopml.registry import Registry
from loopml.routing import CHAMPION
from loopml.store import Store, current_actor

__all__ = [
    "APPROVED_AT_TAG",
    "APPROVED_BY_TAG",
    "APPROVED_SPACE_TAG",
    "APPROVED_SPEC_TAG",
    "TUNE_POLICY",
    "approve",
    "approve_by_policy",
    "check_approved",
    "outside_policy",
    "spec_change",
]

APPROVED_BY_TAG = "loopml.approved_by"
APPROVED_AT_TAG = "loopml.approved_at"
#: digest of the recipe and parameters approved: a tag copied to another spec does not match
APPROVED_SPEC_TAG = "loopml.approved_spec"
#: fingerprint of the search space a policy approval covers (see :func:`approve_by_policy`)
APPROVED_SPACE_TAG = "loopml.approved_space"
#: who approves parameters the controller's own bounded search chose
TUNE_POLICY = "policy:retrain-tune"
#: the run tag (``loopml.kind``) of the controller's retrains, the only runs the policy covers
RETRAIN_KIND = "retrain"

Spec = tuple[str, dict[str, Any]]


def _spec(registry: Registry, mv: ModelVersion) -> Spec | None:
    """The version's recipe and its full parameters, normalized by the recipe's parameter model
    (older versions record them as strings); None if the version names no recipe."""
    found = registry.recipe_of(mv)
    if found is None:
        return None
    name, params = found
    try:
        return name, get_recipe(name, params).params_dict()
    except TrainingError:  # a plug-in recipe not installed here: compare what was recorded
        return name, dict(params)


def _digest(spec: Spec) -> str:
    text = json.dumps({"recipe": spec[0], "params": spec[1]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_change(registry: Registry, mv: ModelVersion) -> dict[str, Any] | None:
    """What the version changes against the champion's recipe and parameters (``recipe``:
    [old, new], ``params``: {name: [old, new]}); None when nothing does, when there is no
    champion, or when either does not name its recipe."""
    champion = registry.alias(CHAMPION)
    if champion is None or str(champion.version) == str(mv.version):
        return None
    old, new = _spec(registry, champion), _spec(registry, mv)
    if old is None or new is None or old == new:
        return None
    change: dict[str, Any] = {"champion": str(champion.version)}
    if old[0] != new[0]:
        change["recipe"] = [old[0], new[0]]
    keys = sorted(set(old[1]) | set(new[1]))
    diff = {k: [old[1].get(k), new[1].get(k)] for k in keys if old[1].get(k) != new[1].get(k)}
    if diff:
        change["params"] = diff
    return change


def _describe(change: dict[str, Any]) -> str:
    parts = []
    if "recipe" in change:
        parts.append(f"recipe {change['recipe'][0]} -> {change['recipe'][1]}")
    parts += [f"{k} {a} -> {b}" for k, (a, b) in change.get("params", {}).items()]
    return ", ".join(parts)


def check_approved(registry: Registry, mv: ModelVersion) -> None:
    """``ApprovalRequiredError`` if ``mv`` changes the champion's recipe or parameters and no
    approval of exactly its spec is recorded on it."""
    change = spec_change(registry, mv)
    if change is None:
        return
    spec = _spec(registry, mv)
    if spec is not None and mv.tags.get(APPROVED_SPEC_TAG) == _digest(spec):
        if mv.tags.get(APPROVED_BY_TAG) != TUNE_POLICY:
            return  # a human's approval of exactly this spec
        why = outside_policy(registry, mv, change, mv.tags.get(APPROVED_SPACE_TAG))
        if why is None:
            return
        raise ApprovalRequiredError(
            f"version {mv.version} changes champion {change['champion']}'s spec "
            f"({_describe(change)}) and {TUNE_POLICY} does not cover it: {why}; an admin "
            f"must review and approve it (`loopml approve {mv.version} --by NAME`)"
        )
    raise ApprovalRequiredError(
        f"version {mv.version} changes champion {change['champion']}'s spec "
        f"({_describe(change)}): an admin must review and approve it first "
        f"(`loopml approve {mv.version} --by NAME`)"
    )


def approve(store: Store, registry: Registry, version: str, *, by: str) -> dict[str, Any]:
    """Record that ``by`` reviewed and approved ``version``'s recipe and parameters: an audit
    record (actor, reviewer, what changed) and the version tags; returns what was recorded."""
    by = by.strip()
    if not by:
        raise RequestError("--by: name who reviewed and approves the parameters")
    mv = registry.version(version)
    spec = _spec(registry, mv)
    if spec is None:
        # a state of the registry, not a bad request: 409
        raise RegistryError(f"version {mv.version} names no recipe: there is no spec to approve")
    change = spec_change(registry, mv)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    actor, digest = current_actor(), _digest(spec)
    record: dict[str, Any] = {
        "version": str(mv.version),
        "by": by,
        "at": at,
        "actor": actor,
        "recipe": spec[0],
        "params": spec[1],
        "spec": digest,
        "change": change,
    }
    champion = change["champion"] if change else None
    with store.session() as session:
        store.audit(
            actor=actor,
            action="approve",
            model_name=registry.name,
            from_version=champion,
            to_version=str(mv.version),
            reason=f"recipe and parameters reviewed and approved by {by}",
            details=record,
            session=session,
        )
        registry.set_tags(
            str(mv.version),
            {APPROVED_BY_TAG: by, APPROVED_AT_TAG: at, APPROVED_SPEC_TAG: digest},
        )
    return record


def outside_policy(
    registry: Registry, mv: ModelVersion, change: dict[str, Any], fingerprint: str | None
) -> str | None:
    """Why ``change`` (from :func:`spec_change`) is not one the retrain-tune policy approves,
    or None when it is: the recipe is the champion's, only parameters its declared search space
    tunes changed, each to a value inside the space, that space still has ``fingerprint``, and
    ``mv`` comes from a controller retrain."""
    if "recipe" in change:
        return f"the recipe changed ({change['recipe'][0]} -> {change['recipe'][1]})"
    found = registry.recipe_of(mv)
    if found is None:
        return "the version names no recipe"
    try:
        space: SearchSpace = declared_space(found[0])
    except TrainingError as exc:
        return f"recipe {found[0]} has no search space here ({exc})"
    if fingerprint != space.fingerprint:
        return f"recipe {found[0]}'s search space is not the one searched"
    for name, (_, new) in change.get("params", {}).items():
        if not space.contains(name, new):
            return f"{name}={new!r} is outside the recipe's search space"
    try:
        run = registry.client.get_run(mv.run_id) if mv.run_id else None
    except MlflowException:
        run = None
    kind = run.data.tags.get("loopml.kind") if run is not None else None
    if kind != RETRAIN_KIND:
        return "the version was not trained by the controller's retrain"
    return None


def approve_by_policy(
    registry: Registry, version: str, space: SearchSpace
) -> dict[str, Any] | None:
    """Record that the retrain-tune policy approves ``version``'s parameters, chosen by a search
    of ``space`` (version tags; the retrain's audit record carries the returned record). None
    when the version changes nothing of the champion's spec; when the policy does not cover its
    change, nothing is recorded on the version and the record says why (``not_covered``): it
    needs a human, as any other change."""
    mv = registry.version(version)
    change = spec_change(registry, mv)
    spec = _spec(registry, mv)
    if change is None or spec is None:
        return None
    why = outside_policy(registry, mv, change, space.fingerprint)
    if why is not None:
        return {"by": None, "change": change, "not_covered": why}
    at = datetime.now(UTC).isoformat(timespec="seconds")
    digest = _digest(spec)
    registry.set_tags(
        str(mv.version),
        {
            APPROVED_BY_TAG: TUNE_POLICY,
            APPROVED_AT_TAG: at,
            APPROVED_SPEC_TAG: digest,
            APPROVED_SPACE_TAG: space.fingerprint,
        },
    )
    record = {"by": TUNE_POLICY, "at": at, "spec": digest, "space": space.fingerprint}
    return record | {"change": change}
