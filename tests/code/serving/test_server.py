"""How ``loopml serve`` hands settings to its worker processes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from pydantic import SecretStr

from loopml.config import Settings, load_settings
from loopml.serving.server import write_settings_file


def _secrets(settings: Settings) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            out[name] = value.get_secret_value()
        elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
            out[name] = [v.get_secret_value() for v in value]
    return out


def test_workers_get_every_secret_the_server_has(tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path,
        admin_token="admin-token-0123456789",
        api_keys="k1,k2:predict+feedback",
        routing_secret="routing-secret-0123456789",
        metrics_token="metrics-token-0123456789",
    )
    path = write_settings_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    worker = load_settings(**json.loads(path.read_text()))
    assert _secrets(worker) == _secrets(settings)
    assert len(_secrets(settings)) == 4  # every secret field of the settings was set above
