"""``GET /``: a status page for humans, and ``GET /v1/status/live``: the numbers it refreshes.

The page is rendered on the server from the routing state this worker follows, the newest
monitoring result and the audit log (both from the loopml database), with inline CSS, inline JS
and inline SVG sparklines: no CDN, no fonts, no network beyond this server (its
Content-Security-Policy allows nothing else). Every 2 s the script reads ``/v1/status/live``
(this worker's per-second request rate and p99 latency per variant, plus the routing) and
redraws. With several workers, each answer comes from one worker's counters (it says which).
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from starlette.responses import HTMLResponse

from loopml.errors import LoopmlError
from loopml.serving.deps import RuntimeDep
from loopml.serving.runtime import Runtime
from loopml.store import MonitorResult

__all__ = ["router"]

router = APIRouter(tags=["operations"])

log = logging.getLogger("loopml.serving")

_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_VARIANTS = ("champion", "challenger", "shadow")


def live_snapshot(runtime: Runtime) -> dict[str, Any]:
    """The JSON of ``/v1/status/live``."""
    snap = runtime.live.snapshot()
    return {
        "pid": os.getpid(),
        "ts": time.time(),
        **snap,
        "routing": runtime.routing_status(),
    }


@router.get("/v1/status/live", summary="Live numbers of this worker")
async def status_live(runtime: RuntimeDep) -> dict[str, Any]:
    """Requests per second and p99 latency (ms) per variant over the last minute, one value a
    second (this worker's counters), and the routing state it obeys."""
    return live_snapshot(runtime)


@router.get("/", summary="Status page", response_class=HTMLResponse, include_in_schema=True)
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


def _from_db(
    runtime: Runtime,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """(newest monitor result, newest 10 audit entries, a problem to show) from the database."""
    store = runtime.store
    name = runtime.settings.model_name
    if store is None:
        return None, [], "the server is not started"
    try:
        with store.session() as session:
            row = session.scalars(
                select(MonitorResult)
                .where(MonitorResult.model_name == name)
                .order_by(MonitorResult.id.desc())
                .limit(1)
            ).first()
            drift = None
            if row is not None:
                drift = {
                    "ts": row.ts,
                    "verdict": row.verdict,
                    "model_version": row.model_version,
                    "window": row.window_size,
                    "checks": list((row.summary or {}).get("checks") or []),
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


# -- rendering ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, str) and value:
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return "-"


def split_text(routing: dict[str, Any]) -> str:
    """The traffic split in words, as obeyed now."""
    mode = routing.get("effective_mode", "none")
    if mode == "canary":
        share = float(routing.get("effective_weight") or 0.0)
        return f"{1 - share:.0%} champion / {share:.0%} challenger"
    if mode == "shadow":
        return "100% champion; the challenger scores every request in shadow"
    if routing.get("mode", "none") != "none":
        return "100% champion (the challenger does not serve: lease expired or not loaded)"
    return "100% champion"


def _rollout_text(routing: dict[str, Any]) -> str:
    rollout = routing.get("rollout")
    if not rollout:
        return "no rollout in progress"
    steps = rollout.get("steps") or []
    step = int(rollout.get("step") or 0)
    weights = ", ".join(f"{float(w):.0%}" for w in steps)
    text = f"{rollout.get('mode', '?')} rollout, step {step + 1} of {len(steps)} ({weights})"
    if routing.get("lease_expired"):
        text += "; controller lease EXPIRED: champion only"
    return text


def _drift_html(drift: dict[str, Any] | None) -> str:
    if drift is None:
        return '<p class="muted">No monitoring result yet (run <code>loopml monitor</code>).</p>'
    rows = []
    for check in drift["checks"]:
        score = check.get("score")
        shown = "-" if score is None else f"{float(score):.3f}"
        status = str(check.get("status", ""))
        rows.append(
            f"<tr><td>{_e(check.get('kind'))}</td><td>{_e(check.get('method'))}</td>"
            f"<td class=num>{_e(shown)}</td><td class=num>{_e(check.get('threshold'))}</td>"
            f'<td><span class="pill {_e(status)}">{_e(status)}</span></td></tr>'
        )
    verdict = str(drift["verdict"])
    return (
        f'<p>Verdict <span id="drift-verdict" class="pill {_e(verdict)}">{_e(verdict)}</span>'
        f" for version {_e(drift['model_version'])}, {_e(drift['window'])} predictions,"
        f" {_e(_when(drift['ts']))}</p>"
        "<table><thead><tr><th>check</th><th>method</th><th>score</th><th>threshold</th>"
        f"<th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _audit_html(audit: list[dict[str, Any]]) -> str:
    if not audit:
        return '<p class="muted">No audit entries yet.</p>'
    rows = [
        f"<tr><td>{_e(_when(a['ts']))}</td><td>{_e(a['actor'])}</td>"
        f"<td><b>{_e(a['action'])}</b></td><td>{_e(a['from'] or '-')} &rarr; {_e(a['to'] or '-')}"
        f"</td><td>{_e(a['reason'])}</td></tr>"
        for a in audit
    ]
    return (
        '<table id="audit"><thead><tr><th>when</th><th>who</th><th>action</th>'
        f"<th>versions</th><th>reason</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _chart(metric: str, title: str, unit: str) -> str:
    lines = "".join(
        f'<polyline class="line {v}" data-variant="{v}" points=""></polyline>' for v in _VARIANTS
    )
    return (
        f'<figure class="chart"><figcaption>{_e(title)} <span class="muted">({_e(unit)},'
        f' last 60 s)</span> <span class="latest" id="latest-{metric}"></span></figcaption>'
        f'<svg id="chart-{metric}" viewBox="0 0 600 120" preserveAspectRatio="none"'
        f' role="img" aria-label="{_e(title)}">'
        '<line class="axis" x1="0" y1="119" x2="600" y2="119"></line>'
        f"{lines}</svg></figure>"
    )


def render(
    runtime: Runtime,
    live: dict[str, Any],
    drift: dict[str, Any] | None,
    audit: list[dict[str, Any]],
    problem: str | None,
) -> str:
    """The whole page."""
    import orjson

    routing = live["routing"]
    serving = routing.get("serving") or {}
    name = runtime.settings.model_name
    champion = serving.get("champion") or routing.get("champion") or "none"
    challenger = routing.get("challenger") or "none"
    challenger_note = ""
    if routing.get("challenger") and serving.get("challenger") != routing.get("challenger"):
        challenger_note = " (not serving here)"
    ready = "ready" if runtime.router.ready else "not ready"
    warn = f'<p class="problem">{_e(problem)}</p>' if problem else ""
    legend = "".join(f'<span class="key {v}">{v}</span>' for v in _VARIANTS)
    initial = orjson.dumps(live).decode().replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loopml: {_e(name)}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>loopml <span class="muted">serving</span> {_e(name)}</h1>
<span class="pill {"ok" if runtime.router.ready else "drift"}">{ready}</span>
<span class="muted">worker pid <span id="pid">{os.getpid()}</span></span></header>
{warn}
<section class="cards">
 <div class="card"><h2>Champion</h2><div class="big" id="champion-version">v{
        _e(champion)
    }</div></div>
 <div class="card"><h2>Challenger</h2><div class="big" id="challenger-version">{
        "v" + _e(challenger) if challenger != "none" else "none"
    }</div>
  <div class="muted" id="challenger-note">{_e(challenger_note)}</div></div>
 <div class="card"><h2>Mode</h2><div class="big" id="mode">{_e(routing.get("effective_mode"))}</div>
  <div class="muted">routing state: <span id="mode-set">{_e(routing.get("mode"))}</span></div></div>
 <div class="card wide"><h2>Traffic split</h2><div class="big" id="split">{
        _e(split_text(routing))
    }</div>
  <div class="muted" id="rollout">{_e(_rollout_text(routing))}</div></div>
</section>
<section><h2>Live <span class="muted">(refreshed every 2 s)</span></h2>
<div class="legend">{legend}</div>
<div class="charts">{_chart("rps", "Requests per second", "req/s")}{
        _chart("p99", "p99 latency", "ms")
    }</div></section>
<section><h2>Drift</h2>{_drift_html(drift)}</section>
<section><h2>Audit log <span class="muted">(latest 10)</span></h2>{_audit_html(audit)}</section>
<footer class="muted">JSON: <a href="/v1/status">/v1/status</a> &middot;
<a href="/v1/status/live">/v1/status/live</a> &middot; <a href="/metrics">/metrics</a> &middot;
<a href="/docs">/docs</a></footer>
<script id="initial" type="application/json">{initial}</script>
<script>{_JS}</script>
</body></html>
"""


_CSS = """
:root{--fg:#1d2430;--muted:#6b7588;--bg:#f5f6f8;--card:#fff;--line:#dde1e7;
--champion:#1f6feb;--challenger:#d9480f;--shadow:#7c3aed;--ok:#1a7f37;--bad:#cf222e}
*{box-sizing:border-box}body{margin:0;padding:20px 28px;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:14px;align-items:center}h1{font-size:22px;margin:0}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:0 0 8px}
section{margin:22px 0}.muted{color:var(--muted);font-weight:normal}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px}
.card.wide{grid-column:span 2}.big{font-size:24px;font-weight:600}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
background:#eaeef2}.pill.ok{background:#dafbe1;color:var(--ok)}
.pill.drift,.pill.alarm{background:#ffebe9;color:var(--bad)}.pill.unavailable{color:var(--muted)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.chart{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px}
.chart svg{width:100%;height:120px;display:block}.axis{stroke:var(--line);stroke-width:1}
.line{fill:none;stroke-width:2;vector-effect:non-scaling-stroke}
.line.champion{stroke:var(--champion)}.line.challenger{stroke:var(--challenger)}
.line.shadow{stroke:var(--shadow);stroke-dasharray:4 3}.latest{float:right;font-weight:600}
.legend{margin-bottom:8px}.key{margin-right:14px;font-weight:600}.key:before{content:"";
display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}
.key.champion:before{background:var(--champion)}.key.challenger:before{background:var(--challenger)}
.key.shadow:before{background:var(--shadow)}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line)}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums}.problem{background:#fff8c5;padding:8px 12px;border-radius:6px}
footer{margin-top:28px}a{color:var(--champion)}
"""

_JS = """
(function(){
  var W=600,H=120,PAD=6,VARIANTS=["champion","challenger","shadow"];
  function pct(x){return Math.round(x*100)+"%";}
  function split(r){
    if(r.effective_mode==="canary"){var w=r.effective_weight||0;
      return pct(1-w)+" champion / "+pct(w)+" challenger";}
    if(r.effective_mode==="shadow"){
      return "100% champion; the challenger scores every request in shadow";}
    if(r.mode&&r.mode!=="none"){
      return "100% champion (the challenger does not serve: lease expired or not loaded)";}
    return "100% champion";
  }
  function rollout(r){
    var o=r.rollout; if(!o){return "no rollout in progress";}
    var steps=o.steps||[], s=(o.step||0);
    var t=o.mode+" rollout, step "+(s+1)+" of "+steps.length+" ("+steps.map(pct).join(", ")+")";
    if(r.lease_expired){t+="; controller lease EXPIRED: champion only";}
    return t;
  }
  function text(id,value){var el=document.getElementById(id); if(el){el.textContent=value;}}
  function draw(metric,data){
    var svg=document.getElementById("chart-"+metric); if(!svg){return;}
    var max=0;
    VARIANTS.forEach(function(v){var s=data.variants[v]; if(!s){return;}
      s[metric==="rps"?"rps":"p99_ms"].forEach(function(x){if(x!==null&&x>max){max=x;}});});
    max=max>0?max*1.1:1;
    var latest=[];
    VARIANTS.forEach(function(v){
      var line=svg.querySelector('polyline[data-variant="'+v+'"]');
      var s=data.variants[v]; if(!s){line.setAttribute("points","");return;}
      var values=s[metric==="rps"?"rps":"p99_ms"], n=values.length, pts=[];
      for(var i=0;i<n;i++){var x=values[i]; if(x===null){continue;}
        pts.push((i*(W/(Math.max(n-1,1)))).toFixed(1)+","+(H-PAD-(x/max)*(H-2*PAD)).toFixed(1));}
      line.setAttribute("points",pts.join(" "));
      for(var j=n-1;j>=0;j--){if(values[j]!==null&&values[j]>0){
        latest.push(v+" "+(Math.round(values[j]*10)/10));break;}}
    });
    text("latest-"+metric,latest.join(" \\u00b7 "));
  }
  function show(data){
    var r=data.routing||{}, serving=r.serving||{};
    text("pid",data.pid);
    text("champion-version","v"+(serving.champion||r.champion||"none"));
    text("challenger-version",r.challenger?"v"+r.challenger:"none");
    text("challenger-note",
      r.challenger&&serving.challenger!==r.challenger?" (not serving here)":"");
    text("mode",r.effective_mode||"none"); text("mode-set",r.mode||"none");
    text("split",split(r)); text("rollout",rollout(r));
    draw("rps",data); draw("p99",data);
    document.body.setAttribute("data-refreshed",String(data.ts));
  }
  function refresh(){
    fetch("/v1/status/live",{cache:"no-store"}).then(function(resp){return resp.json();})
      .then(show).catch(function(){});
  }
  show(JSON.parse(document.getElementById("initial").textContent));
  setInterval(refresh,2000);
})();
"""
