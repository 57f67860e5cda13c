from __future__ import annotations

from pathlib import Path

import pytest

from loopml.config import load_settings, psycopg_url, redact_url
from loopml.errors import ConfigError


def test_defaults_point_every_store_under_home(home: Path) -> None:
    s = load_settings()
    assert s.home_dir == home.resolve()
    assert s.mlflow_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert s.db_url == f"sqlite:///{home.resolve() / 'loopml.db'}"
    assert s.model_name == "sentiment"
    assert not home.exists(), "building settings must not create folders"
    s.prepare()
    assert (home / "spool").is_dir() and (home / "reports").is_dir()


def test_environment_overrides_toml_which_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loopml.toml").write_text('model_name = "from-toml"\nseed = 7\n')
    monkeypatch.setenv("LOOPML_MODEL_NAME", "from-env")
    s = load_settings()
    assert s.model_name == "from-env"
    assert s.seed == 7


def test_postgres_urls_use_the_psycopg3_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_DATABASE_URL", "postgresql://u@db:5432/loopml")
    assert load_settings().db_url == "postgresql+psycopg://u@db:5432/loopml"


def test_api_keys_are_comma_separated_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_API_KEYS", "k1, k2,,")
    keys = load_settings().api_keys
    assert [k.get_secret_value() for k in keys] == ["k1", "k2"]
    assert "k1" not in repr(keys)


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_GATE_F1_TOLERANCE", "lots")
    with pytest.raises(ConfigError, match="LOOPML_GATE_F1_TOLERANCE"):
        load_settings()


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "loopml.toml").write_text("model_name = [unclosed\n")
    with pytest.raises(ConfigError, match=r"loopml\.toml"):
        load_settings()


@pytest.mark.parametrize("token", ["changeme", "short-token"])
def test_production_rejects_placeholder_or_short_admin_token(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("LOOPML_ENV", "production")
    monkeypatch.setenv("LOOPML_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError, match="admin_token"):
        load_settings()


@pytest.mark.parametrize("name", ["admin_token", "routing_secret", "metrics_token"])
@pytest.mark.parametrize("value", ["replace-me-admin-token-at-least-16-chars", "short-secret"])
def test_production_rejects_every_placeholder_or_short_secret(name: str, value: str) -> None:
    # the values of deploy/compose/.env.example and deploy/k8s/secret.example.yaml included
    with pytest.raises(ConfigError, match=name):
        load_settings(env="production", **{name: value})


def test_production_accepts_a_real_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_ENV", "production")
    monkeypatch.setenv("LOOPML_ADMIN_TOKEN", "k8Hq2-vLw9-Zr4tN-0pXe")
    s = load_settings()
    assert s.admin_token is not None and "k8Hq2" not in repr(s)


def test_psycopg_url_names_the_driver_of_plain_postgres_urls_only() -> None:
    assert psycopg_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert psycopg_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert psycopg_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert psycopg_url("http://mlflow:5000") == "http://mlflow:5000"


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql+psycopg://loopml:s3cret@db:5432/x") == (
        "postgresql+psycopg://loopml:***@db:5432/x"
    )
    assert (
        redact_url("https://user:pa:ss@mlflow.example/api") == "https://user:***@mlflow.example/api"
    )
    assert redact_url("sqlite:////tmp/loopml.db") == "sqlite:////tmp/loopml.db"
    assert redact_url("postgresql://loopml@db/x") == "postgresql://loopml@db/x"
    assert redact_url("postgresql://u:pw@[::1/x") == "<unparseable URL>"
