"""How a human ships a version (ML Test Score, infrastructure 6): through a canary by default.

``loopml promote``, ``loopml train --promote`` and ``POST /v1/admin/promote`` call :func:`release`:
it starts a canary rollout (the code path of ``loopml rollout start``; the controller's analysis
then promotes or rolls back by statistics). A direct promotion skips the canary only when asked
for with a reason, and is audited as forced (``force_promote``, ``details.direct``). The first
version of a model has nothing to be compared with, so it becomes the champion directly, audited
as the first champion.

:func:`loopml.control.promote` stays the immediate promotion: the rollout's final step uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from loopml.config import Settings
from loopml.control.promotion import AliasChange, promote
from loopml.control.rollout import start
from loopml.errors import RequestError
from loopml.registry import Registry
from loopml.routing import CHAMPION, Routing
from loopml.store import Store

__all__ = ["Release", "release"]

How = Literal["canary", "direct", "first_champion"]


@dataclass
class Release:
    """What :func:`release` did: a canary started (``routing``) or a promotion (``change``)."""

    how: How
    version: str
    change: AliasChange | None = None
    routing: Routing | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "how": self.how,
            "version": self.version,
            "promotion": vars(self.change) if self.change is not None else None,
            "routing": self.routing.to_dict() if self.routing is not None else None,
        }


def release(
    settings: Settings,
    store: Store,
    registry: Registry,
    version: str,
    *,
    direct: bool = False,
    reason: str = "",
) -> Release:
    """Start a canary of ``version``; promote it at once only if ``direct`` (with a ``reason``)
    or if the model has no champion yet."""
    if direct and not reason.strip():
        raise RequestError(
            "--direct needs --reason: say why this version skips the canary (it is audited)"
        )
    mv = registry.version(version)
    new = str(mv.version)
    if registry.alias(CHAMPION) is None:
        details = {"first_champion": True, "direct": direct}
        change = promote(
            store,
            registry,
            new,
            force=direct,  # a failed gate still needs the explicit, reasoned override
            reason=reason.strip() or "first champion: no version to run a canary against",
            details=details,
        )
        return Release("first_champion", new, change=change)
    if direct:
        change = promote(
            store,
            registry,
            new,
            force=True,
            reason=reason,
            action="force_promote",
            details={"direct": True},
        )
        return Release("direct", new, change=change)
    routing = start(
        settings,
        store,
        registry,
        new,
        mode="canary",
        reason=reason.strip() or "promote: canary first",
        source="promote",
    )
    return Release("canary", new, routing=routing)
