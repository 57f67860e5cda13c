"""Per-model settings: ``[models.<name>]`` sections of loopml.toml over the global settings,
validated like them, with errors that name the section and the key; ``LOOPML_MODELS``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import MODEL_KEYS, load_settings
from loopml.errors import ConfigError

TOML = """
gate_min_macro_f1 = 0.4
rollout_steps = "0.1,0.5,1"

[models]
names = "sentiment,topic"

[models.topic]
gate_min_macro_f1 = 0.55
rollout_steps = [0.5, 1.0]
label_column = "topic"
"""


def test_a_section_overrides_one_model_only(tmp_path: Path) -> None:
    (tmp_path / "loopml.toml").write_text(TOML)
    settings = load_settings()
    assert settings.models == ["sentiment", "topic"]
    assert settings.model_names() == ["sentiment", "topic"]
    topic = settings.for_model("topic")
    assert (topic.model_name, topic.gate_min_macro_f1) == ("topic", 0.55)
    assert (topic.rollout_steps, topic.label_column) == ([0.5, 1.0], "topic")
    sentiment = settings.for_model("sentiment")
    assert (sentiment.gate_min_macro_f1, sentiment.rollout_steps) == (0.4, [0.1, 0.5, 1.0])
    assert sentiment.label_column == "label"
    assert settings.gate_min_macro_f1 == 0.4  # the global settings are left alone


def test_environment_stays_global_and_a_section_is_more_specific(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loopml.toml").write_text(TOML)
    monkeypatch.setenv("LOOPML_GATE_MIN_MACRO_F1", "0.3")
    monkeypatch.setenv("LOOPML_RETRAIN_COOLDOWN_S", "5")
    settings = load_settings()
    assert settings.for_model("sentiment").gate_min_macro_f1 == 0.3
    assert settings.for_model("topic").gate_min_macro_f1 == 0.55
    assert settings.for_model("topic").retrain_cooldown_s == 5


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "gate_min_macro_f1 = 1.5",
            r"\[models\.topic\] of .*loopml\.toml: gate_min_macro_f1: "
            r"Input should be less than or equal to 1",
        ),
        (
            "rollout_steps = [0.5, 0.9]",
            r"\[models\.topic\] of .*: rollout_steps: rollout_steps must end at 1",
        ),
        ("gate_min_macro_f = 0.5", r"\[models\.topic\] of .*: gate_min_macro_f: no such setting"),
        (
            "database_url = 'sqlite:///x.db'",
            r"\[models\.topic\] of .*: database_url: a global setting",
        ),
    ],
)
def test_a_bad_section_is_refused_naming_section_and_key(
    tmp_path: Path, section: str, message: str
) -> None:
    (tmp_path / "loopml.toml").write_text(f"[models.topic]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_models_star_and_plain_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loopml.toml").write_text('[models]\nnames = "*"\n')
    assert load_settings().model_names() is None
    (tmp_path / "loopml.toml").write_text('models = "a, b,a"\n')
    assert load_settings().model_names() == ["a", "b"]
    monkeypatch.setenv("LOOPML_MODELS", "")
    monkeypatch.setenv("LOOPML_MODEL_NAME", "topic")
    assert load_settings().model_names() == ["topic"]
    (tmp_path / "loopml.toml").write_text("[models]\ntopic = 3\n")
    with pytest.raises(ConfigError, match=r"\[models\] topic: a model's settings go in"):
        load_settings()


def test_per_model_keys_are_the_loops_own() -> None:
    assert {"gate_min_macro_f1", "rollout_steps", "retrain_min_labeled"} <= MODEL_KEYS
    assert {"data_source", "label_column", "monitor_min_macro_f1", "noise_check"} <= MODEL_KEYS
    assert not {"database_url", "admin_token", "model_name", "rollout_lease_s"} & MODEL_KEYS


def test_the_cli_refuses_a_bad_section_with_exit_2(tmp_path: Path, home: Path) -> None:
    (tmp_path / "loopml.toml").write_text("[models.topic]\nretrain_cooldown_s = -1\n")
    result = CliRunner().invoke(app, ["controller", "--once"])
    assert result.exit_code == 2, result.output
    assert "[models.topic]" in result.output and "retrain_cooldown_s" in result.output
