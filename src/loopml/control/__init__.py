"""The control plane: rollout analysis and state machine, promotion, policy, retraining and the
controller. The only writer of the routing state (:mod:`loopml.routing`).

Public API below; serving's admin routes, the CLI and the demo use these names. They are imported
on first use (PEP 562): the rollout and the controller load MLflow, which ``loopml --help`` and a
serving worker's start should not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopml.control.approval import approve
    from loopml.control.controller import Controller, MonitorNote, Tick
    from loopml.control.fleet import Fleet
    from loopml.control.promotion import AliasChange, promote, rollback
    from loopml.control.releases import Release, release
    from loopml.control.rollout import RolloutStatus, StepResult
    from loopml.control.rollout import abort as abort_rollout
    from loopml.control.rollout import start as start_rollout
    from loopml.control.rollout import status as rollout_status
    from loopml.control.rollout import step as step_rollout

__all__ = [
    "AliasChange",
    "Controller",
    "Fleet",
    "MonitorNote",
    "Release",
    "RolloutStatus",
    "StepResult",
    "Tick",
    "abort_rollout",
    "approve",
    "promote",
    "release",
    "rollback",
    "rollout_status",
    "start_rollout",
    "step_rollout",
]

# public name -> (module, attribute)
_HOME = {
    "AliasChange": ("promotion", "AliasChange"),
    "approve": ("approval", "approve"),
    "promote": ("promotion", "promote"),
    "rollback": ("promotion", "rollback"),
    "Release": ("releases", "Release"),
    "release": ("releases", "release"),
    "Controller": ("controller", "Controller"),
    "Tick": ("controller", "Tick"),
    "Fleet": ("fleet", "Fleet"),
    "MonitorNote": ("controller", "MonitorNote"),
    "RolloutStatus": ("rollout", "RolloutStatus"),
    "StepResult": ("rollout", "StepResult"),
    "start_rollout": ("rollout", "start"),
    "abort_rollout": ("rollout", "abort"),
    "rollout_status": ("rollout", "status"),
    "step_rollout": ("rollout", "step"),
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        module, attribute = _HOME[name]
        return getattr(importlib.import_module(f"loopml.control.{module}"), attribute)
    raise AttributeError(f"module 'loopml.control' has no attribute {name!r}")
