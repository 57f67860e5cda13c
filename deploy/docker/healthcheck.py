"""Docker HEALTHCHECK of the loopml image, standard library only (no curl in the image).

Reads the container's main command from /proc/1/cmdline: ``loopml serve`` is healthy when
``GET /healthz`` answers 200 on its ``--port`` (default 8000); ``mlflow server`` when
``GET /health`` answers 200 on its ``--port`` (default 5000); any other command (``controller``,
``train``, ``monitor``) when it runs at all. ``LOOPML_HEALTHCHECK_URL`` overrides the URL.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _option(argv: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def _main_command() -> list[str]:
    try:
        return Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def url_for(argv: list[str]) -> str | None:
    """The URL that tells whether the command ``argv`` is healthy; None: no HTTP to check."""
    url = os.environ.get("LOOPML_HEALTHCHECK_URL")
    if url:
        return url
    # [python, /opt/loopml/bin/loopml, serve, ...]: the program, then its subcommand.
    names = [Path(a).name for a in argv]
    program = next((i for i, n in enumerate(names) if n in ("loopml", "mlflow")), None)
    if program is None or program + 1 >= len(argv):
        return None
    command = (names[program], argv[program + 1])
    host = _option(argv, "--host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if command == ("loopml", "serve"):
        return f"http://{host}:{_option(argv, '--port', '8000')}/healthz"
    if command == ("mlflow", "server"):
        return f"http://{host}:{_option(argv, '--port', '5000')}/health"
    return None


def main() -> int:
    url = url_for(_main_command())
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
