"""The foundation's life cycle through the real CLI, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.data import Dataset

runner = CliRunner()


def cli(*args: str) -> tuple[int, Any, str]:
    """Run loopml in-process; returns exit code, parsed JSON stdout (if any) and stderr."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    parsed = None
    if "--json" in args and result.stdout.strip():
        parsed = json.loads(result.stdout)
    return result.exit_code, parsed, result.stderr


@pytest.fixture(autouse=True)
def _small_data_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4,000 tweets leave ~30 "cars" tweets in a test split: too few for the default slice floor.
    monkeypatch.setenv("LOOPML_GATE_MIN_SLICE_F1", "0.2")


@pytest.fixture
def data_csv(small_tweets: Dataset, tmp_path: Path) -> str:
    path = tmp_path / "tweets.csv"
    small_tweets.frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.slow
def test_train_gate_promote_rollback_history(backend_settings: Settings, data_csv: str) -> None:
    code, first, _ = cli("train", "--data", data_csv, "--promote", "--json")
    assert code == 0 and first["gate"]["verdict"] == "passed" and first["promoted"]
    assert first["release"]["how"] == "first_champion", "nothing to run a canary against"
    assert first["metrics"]["macro_f1"] > 0.6

    code, explained, _ = cli("explain", first["version"], "the crew was great", "--json")
    assert code == 0 and explained["model_version"] == first["version"]
    assert explained["classes"]["positive"]["towards"][0]["token"] == "great"
    code, _, _ = cli("explain", "champion", "the crew was great")  # the Rich rendering
    assert code == 0

    code, worse, _ = cli("train", "--data", data_csv, "-p", "C=0.001", "--json")
    assert code == 1, "a worse candidate fails the gate"
    assert worse["gate"]["verdict"] == "failed"
    assert worse["gate"]["champion_version"] == first["version"]
    failed = {c["name"] for c in worse["gate"]["checks"] if not c["passed"]}
    assert "macro_f1" in failed

    code, _, err = cli("promote", worse["version"])
    assert code == 1 and "failed its gate" in err
    for flag in ("--direct", "--force"):
        code, _, err = cli("promote", worse["version"], flag)
        assert code == 2 and "--direct needs --reason" in err
    code, _, _ = cli("evaluate", worse["version"], "--json")
    assert code == 1

    code, same, _ = cli("train", "--data", data_csv, "--promote", "--json")
    assert code == 0 and same["dataset_version"] == first["dataset_version"]
    assert same["promoted"] is False and same["release"]["how"] == "canary"
    code, status, _ = cli("rollout", "status", "--json")
    routing = status["routing"]
    assert (routing["champion"], routing["challenger"]) == (first["version"], same["version"])
    assert routing["mode"] == "canary" and routing["weight"] == pytest.approx(0.1)
    shown = runner.invoke(app, ["rollout", "status"]).stdout
    assert f"challenger {same['version']}: canary at 10%" in shown
    code, _, err = cli("promote", same["version"])
    assert code == 1 and "already running" in err

    code, promoted, _ = cli(
        "promote", same["version"], "--direct", "--reason", "canary cut short", "--json"
    )
    assert code == 0 and promoted["how"] == "direct"
    assert promoted["promotion"]["from_version"] == first["version"]

    code, models, _ = cli("models", "--json")
    aliases = {m["version"]: m["aliases"] for m in models}
    assert aliases[same["version"]] == ["champion"]
    assert aliases[first["version"]] == ["previous"]
    assert {m["version"]: m["gate"] for m in models}[worse["version"]] == "failed"

    code, back, _ = cli("rollback", "--reason", "canary looked bad", "--json")
    assert code == 0 and (back["from_version"], back["to_version"]) == (
        same["version"],
        first["version"],
    )

    code, history, _ = cli("history", "--json")
    assert [(h["action"], h["from_version"], h["to_version"]) for h in history] == [
        ("rollback", same["version"], first["version"]),
        ("force_promote", first["version"], same["version"]),
        ("rollout_start_canary", first["version"], same["version"]),
        ("promote", None, first["version"]),
    ]
    assert history[0]["reason"] == "canary looked bad"
    assert history[1]["reason"] == "canary cut short" and history[1]["details"]["direct"]
    assert history[1]["details"]["gate"] == "passed"
    assert history[2]["reason"] == "train --promote"
    assert history[3]["details"]["first_champion"] is True
    assert all(h["actor"] for h in history)


@pytest.mark.slow
def test_forced_promotion_is_recorded_with_its_reason(settings: Settings, data_csv: str) -> None:
    code, worse, _ = cli("train", "--data", data_csv, "-p", "C=0.0001", "--json")
    # no champion yet: absolute floors apply, and a near-constant model is below them
    assert code == 1 and worse["gate"]["champion_version"] is None
    code, change, _ = cli(
        "promote", worse["version"], "--force", "--reason", "incident 42", "--json"
    )
    assert code == 0 and change["promotion"]["forced"] is True
    code, history, _ = cli("history", "--json")
    assert history[0]["action"] == "force_promote" and history[0]["reason"] == "incident 42"
    assert history[0]["details"]["gate"] == "failed"
    assert history[0]["details"]["first_champion"] is True


BAD_FILES = {
    "missing_text.csv": (
        "text,label\nhello,positive\n,negative\nbye,neutral\n",
        "column 'text': empty text: row 2",
    ),
    "unknown_label.jsonl": (
        '{"text": "a", "label": "positive"}\n{"text": "b", "label": 3}\n',
        "column 'label': not a string (found number): row 2",
    ),
    "one_class.csv": ("text,label\na,positive\nb,positive\n", "fewer than two classes"),
    "dupes.csv": ("text,label\na,positive\nb,negative\na,positive\n", "majority label): row 3"),
    "latin1.csv": (b"text,label\nok,positive\ncaf\xe9,negative\n", "row 2 (file line 3"),
    "no_label.csv": ("text,sentiment\na,positive\n", "missing column 'label'"),
    "empty.csv": ("text,label\n", "no data rows"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_exits_2_names_the_problem_and_registers_nothing(
    settings: Settings, tmp_path: Path, name: str
) -> None:
    content, message = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, _, err = cli("data", "validate", str(path))
    assert code == 2 and message in err and name in err
    code, _, err = cli("train", "--data", str(path))
    assert code == 2 and message in err
    assert "Traceback" not in err
    code, models, _ = cli("models", "--json")
    assert models == []


def test_bad_usage_exits_2(settings: Settings) -> None:
    assert cli("train", "-p", "C")[0] == 2
    assert cli("train", "--recipe", "bert")[0] == 2
    assert cli("promote", "abc")[0] == 2
    assert cli("rollback")[0] == 2  # nothing to roll back to
    assert cli("no-such-command")[0] == 2
    code, _, err = cli("demo", "--budget", "5")  # refused before any work
    assert code == 2 and "--budget" in err and "Traceback" not in err


def test_unknown_labels_with_explicit_label_set(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,positive\nb,angry\n")
    code, _, err = cli("data", "validate", str(path), "--labels", "positive,negative")
    assert code == 2 and "unknown label (allowed: positive, negative): row 2" in err


def test_validate_and_describe_builtin_json(settings: Settings) -> None:
    code, info, _ = cli("data", "validate", "--json")
    assert code == 0 and info["valid"] and info["rows"] > 37000
    code, described, _ = cli("data", "describe", "--json")
    assert described["version"] == info["version"]


@pytest.mark.slow
def test_train_reuses_the_champions_recipe_only_when_asked(
    settings: Settings, data_csv: str
) -> None:
    code, first, _ = cli("train", "--data", data_csv, "-p", "C=0.5", "--promote", "--json")
    assert code == 0 and first["promoted"] and first["recipe_params"]["C"] == 0.5

    code, reused, _ = cli(
        "train", "--data", data_csv, "--recipe", "champion", "-p", "min_df=3", "--json"
    )
    assert code in (0, 1) and reused["recipe"] == "tfidf-logreg"
    assert (reused["recipe_params"]["C"], reused["recipe_params"]["min_df"]) == (0.5, 3)
    assert reused["recipe_reason"] == (
        f"reused from champion version {first['version']}, overriding min_df"
    )

    code, plain, _ = cli("train", "--data", data_csv, "--json")
    assert code in (0, 1) and plain["recipe_params"]["C"] == 4.0, "no --recipe: the defaults"
    assert plain["recipe_reason"] == "recipe tfidf-logreg chosen by the caller"

    code, listed, _ = cli("recipes", "--json")
    assert code == 0 and ("tfidf-logreg", "builtin") in [(r["name"], r["source"]) for r in listed]
    assert cli("train", "-p", "C=-1")[0] == 2
