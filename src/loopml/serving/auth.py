"""Bearer tokens: the admin token for ``/v1/admin/*`` and API keys with roles for the data routes.

``LOOPML_API_KEYS`` entries are ``key`` (predict only) or ``key:role1+role2`` (roles predict,
feedback, admin), optionally scoped to models: ``key:predict+feedback@sentiment+topic`` may predict
and send feedback on those two models only (403 on any other; checked once, in the inference core,
for every protocol). Feedback is a privileged channel: it trains the next model, so it needs a key
with the ``feedback`` role; without any key configured it is open only in development.

Secrets are compared with :func:`hmac.compare_digest` and never logged or echoed; a caller is known
by a key id (a hash prefix of the key, not the key) in the feedback table and the audit log.

Internals (``/v1/status``, ``/v1/status/live``, the page ``/``: PIDs, audit actors, database
errors; ``/docs`` and ``/openapi.json``: the whole API surface) answer anyone only while
``Settings.status_is_public`` (``LOOPML_PUBLIC_STATUS``; by default a development server without API
keys). Otherwise status and page need the admin token or a key with the admin role, and docs an
API key or the admin token; a browser may send them as HTTP Basic credentials (any user name, the
token as password), so the page and its refreshes work behind the browser's own prompt.
``/metrics`` needs ``LOOPML_METRICS_TOKEN`` (or the admin token) when that is set; without it, it
stays open for Prometheus and carries no host, PID or secret (deployments keep it off public
ingress).
``/healthz`` and ``/readyz`` always answer, with nothing but ready or not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from starlette.datastructures import Headers

from loopml.config import Settings, api_key_models, parse_api_key
from loopml.errors import AuthenticationError, NotFoundError, PermissionDeniedError

__all__ = ["ANONYMOUS", "Guard", "Principal", "key_id"]

#: The key id of callers when no API key is configured (the development default).
ANONYMOUS = "anonymous"

T = TypeVar("T")


def key_id(key: str) -> str:
    """The non-secret id of an API key: ``k-`` and 12 hex characters of its SHA-256."""
    return "k-" + hashlib.sha256(b"loopml-key-id:" + key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Principal:
    """Who calls: the key id, the roles of its key and the models it may act on (None: all)."""

    key_id: str
    roles: frozenset[str]
    models: frozenset[str] | None = None

    def check_model(self, name: str, role: str) -> None:
        """PermissionDeniedError unless this key may ``role`` on model ``name``."""
        if self.models is not None and name not in self.models:
            raise PermissionDeniedError(
                f"this API key ({self.key_id}) may not {role} on model {name!r}: it is scoped to"
                f" {', '.join(sorted(self.models))} (LOOPML_API_KEYS entry <key>:{role}@<models>)"
            )


_ANONYMOUS = Principal(ANONYMOUS, frozenset({"predict", "feedback"}))


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _presented(headers: Headers) -> str | None:
    """The secret a request presents: Bearer, ``X-API-Key``, or the password of HTTP Basic."""
    token = _bearer(headers) or headers.get("x-api-key")
    if token:
        return token
    scheme, _, encoded = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def _find(given: bytes, known: Iterable[tuple[bytes, T]]) -> T | None:
    """The value paired with the secret ``given`` equals, else None; every secret is compared
    (no early exit), so the time taken does not tell which one matched."""
    found = None
    for secret, value in known:
        if hmac.compare_digest(given, secret):
            found = value
    return found


#: the 401 of a gated page asks browsers for credentials (Basic) as well as API clients (Bearer)
_BROWSER_CHALLENGE = {"WWW-Authenticate": 'Basic realm="loopml", charset="UTF-8"'}


class Guard:
    """Checks credentials against the settings' secrets (encoded once)."""

    def __init__(self, settings: Settings) -> None:
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self._admin = token.encode() if token else None
        self._keys: list[tuple[bytes, Principal]] = []
        for entry in settings.api_keys:
            key, roles = parse_api_key(entry.get_secret_value())
            scope = api_key_models(entry.get_secret_value())
            self._keys.append((key.encode(), Principal(key_id(key), roles, scope)))
        self._open_feedback = settings.env == "development"
        metrics = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
        self._metrics = metrics.encode() if metrics else None
        self.public_status = settings.status_is_public

    @property
    def keys_required(self) -> bool:
        """Whether the data routes need an API key."""
        return bool(self._keys)

    def admin(self, headers: Headers) -> str:
        """Allow only the admin token or a key with the ``admin`` role; returns who it is."""
        admin_keys = any("admin" in p.roles for _, p in self._keys)
        if self._admin is None and not admin_keys:
            raise NotFoundError("the admin API is disabled: set LOOPML_ADMIN_TOKEN to enable it")
        token = _bearer(headers)
        if token is None:
            raise AuthenticationError("admin endpoints need 'Authorization: Bearer <admin token>'")
        if self._admin is not None and hmac.compare_digest(token.encode(), self._admin):
            return "admin"
        principal = _find(token.encode(), self._keys)
        if principal is not None and "admin" in principal.roles:
            return principal.key_id
        raise PermissionDeniedError("the admin token is not valid")

    def client(self, headers: Headers, role: str = "predict") -> Principal:
        """The caller of a data route, if its key (Bearer or X-API-Key) holds ``role``.

        Without configured keys anyone may predict; feedback then is open only in development.
        """
        if not self._keys:
            if role == "feedback" and not self._open_feedback:
                raise PermissionDeniedError(
                    "feedback needs an API key with the feedback role in production:"
                    " set LOOPML_API_KEYS=<key>:feedback"
                )
            return _ANONYMOUS
        key = headers.get("x-api-key") or _bearer(headers)
        if key is None:
            raise AuthenticationError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        principal = _find(key.encode(), self._keys)
        if principal is None:
            raise PermissionDeniedError("the API key is not valid")
        if role not in principal.roles:
            raise PermissionDeniedError(
                f"this API key ({principal.key_id}) may not {role}: it needs the {role!r} role"
                f" (LOOPML_API_KEYS entry <key>:{role})"
            )
        return principal

    # -- gates of the routes that show internals (kept apart from ``client``'s key roles) --------

    def _gate(self, headers: Headers, accepted: list[bytes], what: str, browser: bool) -> None:
        challenge = _BROWSER_CHALLENGE if browser else None
        if not accepted:
            raise NotFoundError(
                f"{what} is not public (LOOPML_PUBLIC_STATUS) and no credential is configured"
            )
        given = _presented(headers)
        if given is None:
            error: AuthenticationError | PermissionDeniedError = AuthenticationError(
                f"{what} needs credentials: 'Authorization: Bearer <token>'"
            )
            if challenge:
                error.extra_headers = {**(error.extra_headers or {}), **challenge}
            raise error
        if _find(given.encode(), ((secret, True) for secret in accepted)) is None:
            raise PermissionDeniedError(f"the credentials are not valid for {what}")

    def status(self, headers: Headers, *, browser: bool = False) -> None:
        """Allow status and the page: public, the admin token or a key with the admin role (it
        may act on what they show, so it may read them)."""
        if not self.public_status:
            known = [key for key, p in self._keys if "admin" in p.roles]
            known += [self._admin] if self._admin else []
            self._gate(headers, known, "the status", browser)

    def docs(self, headers: Headers) -> None:
        """Allow ``/docs`` and ``/openapi.json``: public, an API key or the admin token."""
        if not self.public_status:
            known = [key for key, _ in self._keys] + ([self._admin] if self._admin else [])
            self._gate(headers, known, "the API documentation", True)

    def metrics(self, headers: Headers) -> None:
        """Allow ``/metrics``: open without ``LOOPML_METRICS_TOKEN``, else it or the admin
        token."""
        if self._metrics is not None:
            known = [self._metrics, *([self._admin] if self._admin else [])]
            self._gate(headers, known, "/metrics", False)
