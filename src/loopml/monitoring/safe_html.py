"""Evidently's HTML made safe to open whatever the monitored texts were.

Evidently 0.7 writes a report as one page whose data (the window's example texts among it) is
JSON inside a ``<script>`` element, dumped without escaping ``</script>``: a text such as
``</script><img src=y onerror=...>`` ends the script early and runs as HTML in the browser of the
operator who opens the report (issue 19). Here the page is rewritten before it is written to disk
(and logged to MLflow):

- the data's JSON gets ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026`` (the same
  strings to the script; nothing the HTML parser can see as a tag);
- a Content-Security-Policy (a ``<meta>``, the page being a file) allows only the page's own inline
  scripts, by hash: an injected handler or script would not run, and nothing may be fetched.

The data block is found by its shape: ``var metric_<hex> = <JSON>;`` then
``var additional_graphs_metric_<hex> = <JSON>;`` on lines of their own (JSON never holds a raw
newline, so a text cannot fake a line). A page without exactly one such block is refused
(:class:`~loopml.errors.MonitorError`; the monitor then leaves that page out, with a warning): an
Evidently release that changed its page must be looked at, not written unsafe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from loopml.errors import MonitorError

__all__ = ["REPORT_CSP", "harden_evidently_html", "script_json"]

# The summary page and Evidently's pages: no network, no plugins, no forms; Evidently's React and
# Plotly set inline styles, and its icon font and plots use data: and blob: URLs.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
    "base-uri 'none'; form-action 'none'"
)

_DATA = re.compile(
    r"<script>\n(?P<indent>[ \t]*)var (?P<id>metric_[0-9a-f]+) = (?P<info>[^\n]*);\n"
    r"[ \t]*var additional_graphs_(?P=id) = (?P<graphs>[^\n]*);\n</script>"
)
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def script_json(text: str) -> str:
    """JSON text made safe inside an HTML ``<script>``: ``<``, ``>``, ``&`` (found only inside
    its strings) written as Unicode escapes, which JSON and JavaScript read back the same."""
    return re.sub(r"[<>&]", lambda m: _ESCAPES[m.group()], text)


def harden_evidently_html(page: str) -> str:
    """Evidently's standalone report page with its data escaped and a CSP allowing only its own
    scripts (see the module docstring). Raises MonitorError if the page is not Evidently 0.7's."""
    found = list(_DATA.finditer(page))
    if len(found) != 1:
        raise MonitorError(
            f"unexpected Evidently report page ({len(found)} data blocks): not written"
        )
    block = found[0]
    for group in ("info", "graphs"):
        try:
            json.loads(block.group(group))
        except ValueError as exc:
            raise MonitorError(f"unexpected Evidently report data: {exc}") from exc
    data = (
        f"<script>\n{block['indent']}var {block['id']} = {script_json(block['info'])};\n"
        f"{block['indent']}var additional_graphs_{block['id']} = "
        f"{script_json(block['graphs'])};\n</script>"
    )
    page = page[: block.start()] + data + page[block.end() :]
    return _with_csp(page)


def _with_csp(page: str) -> str:
    """``page`` with a CSP ``<meta>`` first in its head, naming each inline script by hash."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode() + "'"
        for m in _SCRIPT.finditer(page)
    )
    csp = f"{REPORT_CSP}; script-src {hashes}"
    meta = f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
    head = page.find("<head>")
    if head < 0:
        raise MonitorError("unexpected Evidently report page (no <head>): not written")
    at = head + len("<head>")
    return page[:at] + meta + page[at:]
