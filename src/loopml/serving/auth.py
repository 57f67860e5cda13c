"""Bearer tokens: the admin token for ``/v1/admin/*`` and optional API keys for the data routes.

Secrets are compared with :func:`hmac.compare_digest` and never logged or echoed.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers

from loopml.config import Settings
from loopml.errors import AuthenticationError, NotFoundError, PermissionDeniedError

__all__ = ["Guard"]


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Guard:
    """Checks credentials against the settings' secrets (encoded once)."""

    def __init__(self, settings: Settings) -> None:
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        self._admin = token.encode() if token else None
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys]

    @property
    def keys_required(self) -> bool:
        """Whether the data routes need an API key."""
        return bool(self._keys)

    def admin(self, headers: Headers) -> None:
        """Allow only a request bearing the admin token."""
        if self._admin is None:
            raise NotFoundError("the admin API is disabled: set LOOPML_ADMIN_TOKEN to enable it")
        token = _bearer(headers)
        if token is None:
            raise AuthenticationError("admin endpoints need 'Authorization: Bearer <admin token>'")
        if not hmac.compare_digest(token.encode(), self._admin):
            raise PermissionDeniedError("the admin token is not valid")

    def client(self, headers: Headers) -> None:
        """Allow a request with a valid API key (Bearer or X-API-Key), or any when none is set."""
        if not self._keys:
            return
        key = headers.get("x-api-key") or _bearer(headers)
        if key is None:
            raise AuthenticationError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        given = key.encode()
        ok = False
        for known in self._keys:  # no early exit: every key is compared
            ok |= hmac.compare_digest(given, known)
        if not ok:
            raise PermissionDeniedError("the API key is not valid")
