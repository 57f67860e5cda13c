"""A real Label Studio server (PyPI ``label-studio``, SQLite) on loopback for the tests.

Label Studio lives in its own venv, ``.venv-label-studio`` (``make tools`` installs it: its Django
pins clash with ours). A fresh data directory spends most of a first start on Django migrations
(about 100 s on a 2-core machine), so the first start builds a migrated template next to the venv
(``.venv-label-studio/loopml-template-<version>``) and each session starts on a copy of it (about
20 s). The admin user and its legacy API token come from Label Studio's documented environment
variables (``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD``, ``LABEL_STUDIO_USER_TOKEN`` with
``--enable-legacy-api-token``); annotators sign up through the sign-up form, as people do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

__all__ = ["Annotator", "LabelStudio", "label_studio", "start_label_studio"]

ROOT = Path(__file__).resolve().parents[2]
VERSION = "1.23.2"
ADMIN_EMAIL = "admin@loopml.test"
ADMIN_PASSWORD = "loopml-admin-password-0123"
ADMIN_TOKEN = "0123456789abcdef0123456789abcdef01234567"
#: The test ports (18400-18499 belong to these tests).
PORT, TEMPLATE_PORT = 18401, 18402


def label_studio_bin() -> Path:
    """The ``label-studio`` executable of the tool venv (``LOOPML_LABEL_STUDIO_BIN`` overrides)."""
    path = Path(
        os.environ.get("LOOPML_LABEL_STUDIO_BIN")
        or ROOT / ".venv-label-studio" / "bin" / "label-studio"
    )
    if not path.exists():
        pytest.fail(
            f"label-studio is missing at {path}: `make tools` installs it into .venv-label-studio",
            pytrace=False,
        )
    return path


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "LABEL_STUDIO_"))}
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": ADMIN_EMAIL,
            "LABEL_STUDIO_PASSWORD": ADMIN_PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": ADMIN_TOKEN,
            # annotators sign up without an invitation link
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false",
            # webhooks go to loopml on loopback, which SSRF protection refuses
            "SSRF_PROTECTION_ENABLED": "false",
            "WEBHOOK_TIMEOUT": "10",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
        }
    )
    return env


def _choice(label: str) -> list[dict[str, object]]:
    value = {"choices": [label]}
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": value}]


@dataclass
class Annotator:
    """A Label Studio user and an API client acting as them."""

    id: int
    email: str
    client: httpx.Client

    def annotate(self, task_id: int, label: str) -> dict[str, object]:
        """Choose ``label`` for the task, as the labelling UI does."""
        result = _choice(label)
        response = self.client.post(f"/api/tasks/{task_id}/annotations/", json={"result": result})
        response.raise_for_status()
        created: dict[str, object] = response.json()
        return created

    def relabel(self, annotation_id: int, label: str) -> None:
        """Change an annotation's choice (Label Studio sends ANNOTATION_UPDATED)."""
        result = _choice(label)
        response = self.client.patch(f"/api/annotations/{annotation_id}/", json={"result": result})
        response.raise_for_status()


@dataclass
class LabelStudio:
    """A running Label Studio process on loopback."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    start_seconds: float
    admin: httpx.Client = field(init=False)
    _signups: int = 0

    def __post_init__(self) -> None:
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {ADMIN_TOKEN}"}, timeout=30
        )

    @property
    def token(self) -> str:
        """The admin's legacy API token (what LOOPML_LABEL_STUDIO_TOKEN holds)."""
        return ADMIN_TOKEN

    def signup(self, name: str) -> Annotator:
        """A new annotator, signed up through the form (CSRF and all), with their own token."""
        self._signups += 1
        email = f"{name}-{self._signups}@loopml.test"
        with httpx.Client(base_url=self.url, timeout=30) as web:
            web.get("/user/signup/").raise_for_status()
            csrf = web.cookies["csrftoken"]
            form = {"email": email, "password": "annotator-pass-0123", "csrfmiddlewaretoken": csrf}
            answer = web.post(
                "/user/signup/",
                data=form,
                headers={"Referer": f"{self.url}/user/signup/", "X-CSRFToken": csrf},
            )
            assert answer.status_code in (200, 302), answer.text[:500]
            token = web.get("/api/current-user/token").raise_for_status().json()["token"]
            me = web.get("/api/current-user/whoami").raise_for_status().json()
        client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {token}"}, timeout=30
        )
        return Annotator(id=int(me["id"]), email=email, client=client)

    def logs(self) -> str:
        """The end of what the server printed."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM the server's process group (SIGKILL after 20 s)."""
        self.admin.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _launch(data_dir: Path, port: int, log_path: Path, timeout: float) -> LabelStudio:
    cmd = [
        str(label_studio_bin()),
        "start",
        "--no-browser",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--enable-legacy-api-token",
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = LabelStudio(url, data_dir, proc, log_path, 0.0)
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"label-studio exited with {proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                server.start_seconds = time.monotonic() - started
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"label-studio not up after {timeout:.0f}s:\n{server.logs()}")


def _template() -> Path:
    """A migrated data directory with the admin user, built once per Label Studio version."""
    template = label_studio_bin().parents[1] / f"loopml-template-{VERSION}"
    if (template / "label_studio.sqlite3").exists():
        return template
    building = Path(tempfile.mkdtemp(prefix="ls-template-", dir=template.parent))
    server = _launch(building / "data", TEMPLATE_PORT, building / "log", timeout=600)
    server.stop()
    with contextlib.suppress(OSError):  # another session built it meanwhile
        (building / "data").rename(template)
    shutil.rmtree(building, ignore_errors=True)
    return template


def start_label_studio(base: Path, port: int = PORT, timeout: float = 300) -> LabelStudio:
    """Label Studio on a copy of the template under ``base``, up and answering /health."""
    data_dir = base / "label-studio-data"
    shutil.copytree(_template(), data_dir)
    return _launch(data_dir, port, base / "label-studio.log", timeout)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    """One real Label Studio server for the session (stopped at its end)."""
    server = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    print(f"label-studio {VERSION} up in {server.start_seconds:.1f}s")
    try:
        yield server
    finally:
        server.stop()


def task_ids(server: LabelStudio, project: int) -> dict[str, int]:
    """request id -> task id of the project's tasks."""
    found: dict[str, int] = {}
    page = 1
    while True:
        answer = server.admin.get(
            "/api/tasks/", params={"project": project, "page": page, "page_size": 100}
        )
        if answer.status_code == 404:
            return found
        tasks = answer.raise_for_status().json()["tasks"]
        found.update({t["data"]["request_id"]: int(t["id"]) for t in tasks})
        if len(tasks) < 100:
            return found
        page += 1
