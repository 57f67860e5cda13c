"""The README is the front door: its settings table and CLI reference must stay true."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from loopml.cli import app
from loopml.config import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"LOOPML_{name.upper()}"
        for name in Settings.model_fields
        if f"LOOPML_{name.upper()}" not in README
    ]
    assert missing == []


def test_documented_settings_exist() -> None:
    documented = set(re.findall(r"`LOOPML_([A-Z0-9_]+)`", README))
    known = {n.upper() for n in Settings.model_fields} | {"CONFIG", "TEST_POSTGRES_URL", "ACTOR"}
    assert documented - known == set()


def test_every_command_is_in_the_cli_reference() -> None:
    group = typer.main.get_group(app)
    names = set(group.commands) - {"data"}
    names |= {f"data {sub}" for sub in group.commands["data"].commands}  # type: ignore[attr-defined]
    missing = [n for n in sorted(names) if f"`loopml {n}" not in README]
    assert missing == []
