"""``GET /``: a status page for humans, ``GET /v1/status/live``: the numbers it refreshes, and
``GET /static/{name}``: its stylesheet and script.

The page is rendered on the server (the Jinja2 template ``serving/templates/status.html``, with
autoescape) from the routing state this worker follows, the newest monitoring result and the audit
log (both from the loopml database). Its CSS and JS are files of the package
(``serving/static/``), its charts inline SVG: no CDN, no fonts, no network beyond this server (its
Content-Security-Policy allows nothing else, and no inline script or style). Every 2 s the script
reads ``/v1/status/live`` (this worker's per-second request rate and p99 latency per variant, the
routing, and ``display``: every text the page shows, formatted here) and redraws. With several
workers, each answer comes from one worker's counters (it says which).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import time
from datetime import datetime
from importlib import resources
from pathlib import PurePath
from typing import Any

import jinja2
import orjson
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from loopml._time import as_utc
from loopml.errors import LoopmlError, NotFoundError
from loopml.serving.deps import RuntimeDep
from loopml.serving.docs import error_responses
from loopml.serving.runtime import Runtime
from loopml.serving.status import served_status

__all__ = ["display", "live_snapshot", "render", "router", "split_text"]

router = APIRouter(tags=["operations"])

log = logging.getLogger("loopml.serving")

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_VARIANTS = ("champion", "challenger", "shadow")
_CHECK_KEYS = ("kind", "method", "score", "threshold", "status")
_STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# A URL carrying the file's hash (``?v=...``, as the page links it) never changes content.
_IMMUTABLE = "public, max-age=31536000, immutable"


def live_snapshot(runtime: Runtime) -> dict[str, Any]:
    """The JSON of ``/v1/status/live``."""
    snap = runtime.live.snapshot()
    routing = runtime.routing_status()
    return {
        "pid": os.getpid(),
        "ts": time.time(),
        **snap,
        "routing": routing,
        "display": display(routing, snap.get("variants") or {}),
    }


@router.get(
    "/v1/status/live",
    summary="Live numbers of this worker",
    responses=error_responses(401, 403, 404),
)
async def status_live(runtime: RuntimeDep) -> dict[str, Any]:
    """Requests per second and p99 latency (ms) per variant over the last minute, one value a
    second (this worker's counters), the routing state it obeys, and ``display``: the status
    page's texts (element id to text)."""
    return live_snapshot(runtime)


@router.get(
    "/",
    summary="Status page",
    response_class=HTMLResponse,
    responses=error_responses(401, 403, 404),
)
async def page(runtime: RuntimeDep) -> HTMLResponse:
    """Champion and challenger, rollout and traffic split, live charts, drift, audit log."""
    drift, audit, problem = await asyncio.to_thread(_from_db, runtime)
    body = render(runtime, live_snapshot(runtime), drift, audit, problem)
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": _CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str, request: Request) -> Response:
    """A file of ``serving/static`` (the page's CSS and JS), with an ETag; cached for a year
    when asked for with its hash (``?v=``), else revalidated on every use."""
    found = _static_files().get(name)
    if found is None:
        raise NotFoundError("no such static file")
    content, etag, media_type = found
    headers = {
        "ETag": f'"{etag}"',
        "Cache-Control": _IMMUTABLE if request.query_params.get("v") == etag else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if f'"{etag}"' in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@functools.cache
def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, short SHA-256, content type) of every servable file in the package."""
    files: dict[str, tuple[bytes, str, str]] = {}
    for entry in (resources.files("loopml.serving") / "static").iterdir():
        media_type = _STATIC_TYPES.get(PurePath(entry.name).suffix)
        if media_type is None or not entry.is_file():
            continue
        content = entry.read_bytes()
        files[entry.name] = (content, hashlib.sha256(content).hexdigest()[:16], media_type)
    return files


def static_url(name: str) -> str:
    """The URL of a static file, with its hash (so a new release is fetched, not cached)."""
    return f"/static/{name}?v={_static_files()[name][1]}"


def _from_db(
    runtime: Runtime,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """(newest monitor result, newest 10 audit entries, a problem to show) from the database."""
    store = runtime.store
    name = runtime.settings.model_name
    if store is None:
        return None, [], "the server is not started"
    try:
        row = store.latest_monitor_result(name)
        drift = None
        if row is not None:
            drift = {
                "ts": row.ts,
                "verdict": row.verdict,
                "model_version": row.model_version,
                "window": row.window_size,
                "checks": [
                    {key: check.get(key) for key in _CHECK_KEYS}
                    for check in (row.summary or {}).get("checks") or []
                    if isinstance(check, dict)
                ],
            }
        audit = [
            {
                "ts": e.ts,
                "actor": e.actor,
                "action": e.action,
                "from": e.from_version,
                "to": e.to_version,
                "reason": e.reason,
            }
            for e in store.history(name, limit=10)
        ]
    except LoopmlError as exc:
        log.warning("status page: %s", exc)
        return None, [], f"the loopml database is unavailable: {exc}"
    return drift, audit, None


# -- texts: formatted once, here; the template and the script only place them -------------------


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, str) and value:
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return "-"


def _score(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _pct(share: Any) -> str:
    return f"{float(share or 0.0):.0%}"


def split_text(routing: dict[str, Any]) -> str:
    """The traffic split in words, as obeyed now."""
    mode = routing.get("effective_mode", "none")
    if mode == "canary":
        share = float(routing.get("effective_weight") or 0.0)
        return f"{_pct(1 - share)} champion / {_pct(share)} challenger"
    if mode == "shadow":
        return "100% champion; the challenger scores every request in shadow"
    if (routing.get("mode") or "none") != "none":
        return "100% champion (the challenger does not serve: lease expired or not loaded)"
    return "100% champion"


def _rollout_text(routing: dict[str, Any]) -> str:
    rollout = routing.get("rollout")
    if not rollout:
        return "no rollout in progress"
    steps = rollout.get("steps") or []
    step = int(rollout.get("step") or 0)
    weights = ", ".join(_pct(w) for w in steps)
    text = f"{rollout.get('mode', '?')} rollout, step {step + 1} of {len(steps)} ({weights})"
    if routing.get("lease_expired"):
        text += "; controller lease EXPIRED: champion only"
    return text


def _number(value: float) -> str:
    """One decimal at most: 12.34 -> '12.3', 12.0 -> '12'."""
    return f"{round(value, 1):.1f}".removesuffix(".0")


def _latest(variants: dict[str, Any], series: str) -> str:
    """The newest non-zero value of ``series`` per variant: 'champion 12 · challenger 4.5'."""
    parts = []
    for variant in _VARIANTS:
        values = (variants.get(variant) or {}).get(series) or []
        last = next((x for x in reversed(values) if x is not None and x > 0), None)
        if last is not None:
            parts.append(f"{variant} {_number(last)}")
    return " \u00b7 ".join(parts)


def display(routing: dict[str, Any], variants: dict[str, Any]) -> dict[str, str]:
    """Every text of the status page that changes while it is open: element id -> text."""
    serving = routing.get("serving") or {}
    champion = serving.get("champion") or routing.get("champion")
    challenger = routing.get("challenger")
    not_serving = bool(challenger) and serving.get("challenger") != challenger
    return {
        "champion-version": f"v{champion}" if champion else "none",
        "challenger-version": f"v{challenger}" if challenger else "none",
        "challenger-note": " (not serving here)" if not_serving else "",
        "mode": routing.get("effective_mode") or "none",
        "mode-set": routing.get("mode") or "none",
        "split": split_text(routing),
        "rollout": _rollout_text(routing),
        "latest-rps": _latest(variants, "rps"),
        "latest-p99": _latest(variants, "p99_ms"),
    }


# -- rendering ---------------------------------------------------------------------------------


@functools.cache
def _templates() -> jinja2.Environment:
    """The serving package's templates (created on first use), HTML-escaping every value."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("loopml.serving", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda value: "" if value is None else value,
    )
    env.filters["when"] = _when
    env.filters["score"] = _score
    env.globals["static_url"] = static_url
    # ``tojson`` (the page's initial JSON) with orjson, as before: datetimes, numpy numbers.
    env.policies["json.dumps_function"] = _json
    env.policies["json.dumps_kwargs"] = {}
    return env


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def render(
    runtime: Runtime,
    live: dict[str, Any],
    drift: dict[str, Any] | None,
    audit: list[dict[str, Any]],
    problem: str | None,
) -> str:
    """The whole page."""
    return (
        _templates()
        .get_template("status.html")
        .render(
            name=runtime.settings.model_name,
            ready=runtime.router.ready,
            live=live,
            display=live["display"],
            variants=_VARIANTS,
            drift=drift,
            audit=audit,
            problem=problem,
            served=[served_status(runtime, sv) for sv in runtime.models.all()],
        )
    )
