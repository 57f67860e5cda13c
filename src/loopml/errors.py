"""The one exception tree of loopml.

Every error a user can cause is a ``LoopmlError``; entry points (CLI, HTTP) turn it into a clear
message and an exit code or status, never a traceback. Errors of the libraries below (MLflow,
SQLAlchemy, pandas) are translated at the boundary with ``raise ... from exc``.

    LoopmlError
    ├── ConfigError            bad settings or loopml.toml
    ├── DataError              data that cannot be used (exit 2)
    │   ├── DataSourceError    a source that cannot be found or read
    │   └── ValidationError    data that breaks a validation rule
    ├── TrainingError          a recipe failed or got bad parameters
    ├── RegistryError          model registry problems (unknown version, missing alias)
    ├── GateFailedError        a candidate failed the promotion gate (exit 1)
    ├── StoreError             the loopml database is unreachable or inconsistent
    ├── ServingError           the serving layer cannot load or answer with a model
    ├── MonitorError           monitoring cannot run (no champion, no reference data)
    └── RolloutError           a rollout cannot start, continue or be aborted
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DataSourceError",
    "GateFailedError",
    "LoopmlError",
    "MonitorError",
    "RegistryError",
    "RolloutError",
    "ServingError",
    "StoreError",
    "TrainingError",
    "ValidationError",
]


class LoopmlError(Exception):
    """Base class of every error loopml raises on purpose."""

    exit_code: int = 2


class ConfigError(LoopmlError):
    """Settings or loopml.toml hold a value loopml cannot use."""


class DataError(LoopmlError):
    """Data cannot be used for training or evaluation."""


class DataSourceError(DataError):
    """A data source cannot be found, read or decoded."""


class ValidationError(DataError):
    """Data breaks one or more validation rules."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} validation problem(s):\n{lines}")


class TrainingError(LoopmlError):
    """A recipe failed to train or was given bad parameters."""


class RegistryError(LoopmlError):
    """The model registry has no such model, version or alias, or refused a change."""


class GateFailedError(LoopmlError):
    """A candidate model failed the promotion gate."""

    exit_code = 1


class StoreError(LoopmlError):
    """The loopml database cannot be reached or holds inconsistent state."""

    exit_code = 1


class ServingError(LoopmlError):
    """The serving layer cannot load a model or answer with it."""

    exit_code = 1


class MonitorError(LoopmlError):
    """Monitoring cannot run: no champion, no reference data, or a bad window."""


class RolloutError(LoopmlError):
    """A rollout cannot be started, advanced or aborted."""

    exit_code = 1
