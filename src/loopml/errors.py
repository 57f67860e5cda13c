"""The one exception tree of loopml.

Every error a user can cause is a ``LoopmlError``. Each class carries both of its renderings: an
``exit_code`` for the CLI (0 ok, 1 a gate or check failed, 2 bad usage or bad data, 3 another
controller holds the lease) and an ``http_status`` for the API (plus ``Retry-After`` when waiting
helps). One handler per entry point maps them (``loopml.cli.common.handle_errors``, the serving
app's exception handler and its fast lane), as KServe's ``errors.py`` does; domain code never
builds an HTTP response. Errors of the libraries below (MLflow, SQLAlchemy, pandas) are
translated at the boundary with ``raise ... from exc``.

                                   exit  http
    LoopmlError                       2   409   anything refused on purpose
    ├── ConfigError                   2   503   bad settings or loopml.toml
    ├── DataError                     2   422   data that cannot be used
    │   ├── DataSourceError           2   422   a source that cannot be found or read
    │   └── ValidationError           2   422   data that breaks a validation rule
    ├── RequestError                  2   422   a request field is wrong (says which)
    │   ├── MalformedRequestError     2   400   the body is empty, not UTF-8 or not JSON
    │   ├── AuthenticationError       2   401   no credentials
    │   ├── PermissionDeniedError     2   403   credentials that are not valid
    │   ├── NotFoundError             2   404   no such thing (request id, disabled API)
    │   ├── ConflictError             2   409   it is already done (a label once given)
    │   ├── PayloadTooLargeError      2   413   a body over the size limit
    │   └── RateLimitedError          2   429   over a per-key rate limit (retry later)
    ├── TrainingError                 2   422   a recipe failed or got bad parameters
    ├── RegistryError                 2   409   the registry refused a change
    │   ├── UnknownVersionError       2   404   no such model version
    │   └── TrackingUnavailableError  2   503   the MLflow store is locked or unreachable (retry)
    ├── GateFailedError               1   409   a candidate failed the promotion gate
    │   └── ApprovalRequiredError     1   409   changed parameters that no admin approved
    ├── StoreError                    1   503   the loopml database is unreachable
    │   └── SchemaBehindError         2   503   its schema needs `loopml db upgrade` first
    ├── ServingError                  1   503   a model cannot load or answer (retry)
    │   ├── NotReadyError             1   503   nothing to serve with yet (retry)
    │   ├── OverloadedError           1   503   the queue is full (retry)
    │   ├── JournalError              1   503   the prediction journal cannot be written (retry)
    │   └── ReloadFailedError         1   409   a reload failed; the old model serves on
    ├── MonitorError                  2   409   monitoring cannot run (no champion, no data)
    ├── RolloutError                  1   409   a rollout cannot start, continue or stop
    ├── ControllerBusyError           3   409   another controller holds the model's lease
    │   └── LeaseLostError            3   409   it was taken over while this one was working
    └── AnnotationToolError           1   502   Label Studio is unreachable or refused a call
"""

from __future__ import annotations

__all__ = [
    "AnnotationToolError",
    "ApprovalRequiredError",
    "AuthenticationError",
    "ConfigError",
    "ConflictError",
    "ControllerBusyError",
    "DataError",
    "DataSourceError",
    "GateFailedError",
    "JournalError",
    "LeaseLostError",
    "LoopmlError",
    "MalformedRequestError",
    "MonitorError",
    "NotFoundError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RegistryError",
    "ReloadFailedError",
    "RequestError",
    "RolloutError",
    "SchemaBehindError",
    "ServingError",
    "StoreError",
    "TrackingUnavailableError",
    "TrainingError",
    "UnknownVersionError",
    "ValidationError",
]


class LoopmlError(Exception):
    """Base class of every error loopml raises on purpose."""

    exit_code: int = 2
    http_status: int = 409
    retry_after_s: int | None = None
    #: extra response headers (e.g. ``WWW-Authenticate``), set per class or per instance
    extra_headers: dict[str, str] | None = None

    @property
    def http_headers(self) -> dict[str, str] | None:
        """Response headers for this error: ``extra_headers`` plus ``Retry-After`` if set."""
        headers = dict(self.extra_headers or {})
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers or None


class ConfigError(LoopmlError):
    """Settings or loopml.toml hold a value loopml cannot use."""

    http_status = 503


class DataError(LoopmlError):
    """Data cannot be used for training or evaluation."""

    http_status = 422


class DataSourceError(DataError):
    """A data source cannot be found, read or decoded."""


class ValidationError(DataError):
    """Data breaks one or more validation rules."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} validation problem(s):\n{lines}")


class RequestError(LoopmlError):
    """A request the server refuses; the message names the field and what is wrong with it."""

    http_status = 422


class MalformedRequestError(RequestError):
    """The request body is empty, not UTF-8 or not JSON."""

    http_status = 400


class AuthenticationError(RequestError):
    """The request carries no credentials where they are needed."""

    http_status = 401
    extra_headers = {"WWW-Authenticate": "Bearer"}


class PermissionDeniedError(RequestError):
    """The request's credentials are not valid for what it asks."""

    http_status = 403


class NotFoundError(RequestError):
    """The request names something that does not exist (or an API that is switched off)."""

    http_status = 404


class ConflictError(RequestError):
    """The request would change something that may not change this way (a given label)."""

    http_status = 409


class PayloadTooLargeError(RequestError):
    """The request body is larger than the server accepts."""

    http_status = 413


class RateLimitedError(RequestError):
    """The caller is over its rate limit; ``Retry-After`` says when to come back."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TrainingError(LoopmlError):
    """A recipe failed to train or was given bad parameters."""

    http_status = 422


class RegistryError(LoopmlError):
    """The model registry has no such model, version or alias, or refused a change."""


class UnknownVersionError(RegistryError):
    """The named model version does not exist."""

    http_status = 404


class TrackingUnavailableError(RegistryError):
    """The MLflow tracking/registry store is locked, down or unreachable: retry later."""

    http_status = 503
    retry_after_s = 5


class GateFailedError(LoopmlError):
    """A candidate model failed the promotion gate."""

    exit_code = 1


class ApprovalRequiredError(GateFailedError):
    """A version changes the champion's recipe or parameters and no admin has approved it."""


class StoreError(LoopmlError):
    """The loopml database cannot be reached or holds inconsistent state."""

    exit_code = 1
    http_status = 503
    retry_after_s = 5


class SchemaBehindError(StoreError):
    """The database's schema is older than this code needs and migrating on open is off."""

    exit_code = 2
    retry_after_s = 30


class ServingError(LoopmlError):
    """The serving layer cannot load a model or answer with it."""

    exit_code = 1
    http_status = 503
    retry_after_s: int | None = 1


class NotReadyError(ServingError):
    """Nothing to serve with yet: no model loaded, or the server is not started."""

    retry_after_s = 5


class OverloadedError(ServingError):
    """The server's queue is full: retry shortly."""


class JournalError(ServingError):
    """The prediction journal cannot be written (disk full or failing): nothing was answered."""

    retry_after_s = 5


class ReloadFailedError(ServingError):
    """A requested reload failed; the previous model keeps serving."""

    http_status = 409
    retry_after_s = None


class MonitorError(LoopmlError):
    """Monitoring cannot run: no champion, no reference data, or a bad window."""


class RolloutError(LoopmlError):
    """A rollout cannot be started, advanced or aborted."""

    exit_code = 1


class ControllerBusyError(LoopmlError):
    """Another controller holds the model's lease: this one does nothing (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        #: the holder named in the message, when known
        self.holder = holder


class LeaseLostError(ControllerBusyError):
    """The lease was taken over (this controller was away past its expiry): stop acting."""


class AnnotationToolError(LoopmlError):
    """The annotation tool (Label Studio) is unreachable or refused a call: nothing is lost,
    retry once it answers."""

    exit_code = 1
    http_status = 502
