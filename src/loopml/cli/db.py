"""``loopml db upgrade|current|check``: the loopml database's schema."""

from __future__ import annotations

from typing import Any

import typer

from loopml.cli import render
from loopml.cli.common import JsonOpt, emit_json, handle_errors
from loopml.config import load_settings

__all__ = ["db_app"]

db_app = typer.Typer(
    help="The loopml database's schema: upgrade it, show or check its revision.",
    no_args_is_help=True,
)


def _schema(*, upgrade: bool) -> tuple[str, Any, Any]:
    """The redacted database URL, the schema state before and after (``upgrade``: migrated).

    Any failure to reach or read the database exits 2 (a bad or unreachable URL).
    """
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from loopml.config import redact_url
    from loopml.errors import ConfigError
    from loopml.store._db import connect, migrate, open_error, schema_state

    url = load_settings().db_url
    engine = connect(url)
    try:
        before = schema_state(engine)
        after = migrate(engine) if upgrade else before
    except (SQLAlchemyError, CommandError) as exc:
        raise ConfigError(f"{open_error(url, exc)} (LOOPML_DATABASE_URL)") from exc
    finally:
        engine.dispose()
    return redact_url(url), before, after


@db_app.command("upgrade")
@handle_errors
def db_upgrade(json_out: JsonOpt = False) -> None:
    """Migrate the loopml database to this release's schema (run before rolling out a release
    with LOOPML_DB_AUTO_MIGRATE=false). A schema already newer is left as it is."""
    url, before, after = _schema(upgrade=True)
    if json_out:
        emit_json({"database": url, "from": before.revision, **after.to_dict()})
        return
    render.upgraded(before, after)


@db_app.command("current")
@handle_errors
def db_current(json_out: JsonOpt = False) -> None:
    """The database's schema revision, this release's head and what that means."""
    url, state, _ = _schema(upgrade=False)
    if json_out:
        emit_json({"database": url, **state.to_dict(), "message": state.describe()})
        return
    render.schema(url, state)


@db_app.command("check")
@handle_errors
def db_check(json_out: JsonOpt = False) -> None:
    """Exit 0 when this release can use the schema (at its head, or newer: migrations are
    additive), 1 when it is behind and needs `loopml db upgrade`, 2 when the URL is bad or the
    database unreachable."""
    url, state, _ = _schema(upgrade=False)
    if json_out:
        emit_json({"database": url, **state.to_dict(), "message": state.describe()})
    else:
        render.schema_check(state)
    if not state.usable:
        raise typer.Exit(1)
