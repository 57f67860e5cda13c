from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

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


GOOD = "k8Hq2-vLw9-Zr4tN-0pXe"  # a strong secret, as openssl rand would give
GOOD2 = "Qm7x-R2pd-9Lwz-Vt4c-e1"

#: (settings, what the message must name): issue 19 row 3's keys first, then every other secret
WEAK_SECRETS = [
    ({"api_keys": "x:admin"}, "LOOPML_API_KEYS entry 1 (role admin) is shorter than 16"),
    (
        {"api_keys": "changeme:predict+feedback"},
        "entry 1 (roles predict+feedback) is a placeholder",
    ),
    (
        {"api_keys": "k1-0123456789abcdef,k1-0123456789abcdef:admin"},
        "LOOPML_API_KEYS entry 2 (role admin) is the same secret as LOOPML_API_KEYS entry 1 (role",
    ),
    ({"api_keys": f"{GOOD},test-key-0123456789:feedback"}, "entry 2 (role feedback) is a place"),
    ({"api_keys": f"{GOOD}:admin", "admin_token": GOOD}, "entry 1 (role admin) is the same secret"),
    ({"admin_token": "changeme"}, "LOOPML_ADMIN_TOKEN is a placeholder"),
    ({"admin_token": "short-token"}, "LOOPML_ADMIN_TOKEN is shorter than 16 characters"),
    ({"admin_token": "Secret_Password_2024!"}, "LOOPML_ADMIN_TOKEN is a placeholder"),
    ({"routing_secret": "abcabcabcabcabcabcabc"}, "LOOPML_ROUTING_SECRET repeats one short"),
    ({"routing_secret": "replace-me-routing-secret-at-least-16-chars"}, "LOOPML_ROUTING_SECRET"),
    ({"metrics_token": "example-token-00000000"}, "LOOPML_METRICS_TOKEN is a placeholder"),
    ({"metrics_token": GOOD, "routing_secret": GOOD}, "LOOPML_METRICS_TOKEN is the same secret"),
    (
        {"database_url": "postgresql://loopml:PASSWORD@db:5432/loopml"},
        "the password in LOOPML_DATABASE_URL is a placeholder",
    ),
    ({"tracking_uri": "http://u:pw-12@mlflow:5000"}, "the password in LOOPML_TRACKING_URI is sh"),
]


def _values(settings: dict[str, str]) -> list[str]:
    """The secret values of ``settings`` that a message must never show (one letter is too
    common to look for: it is in every message)."""
    found: list[str] = []
    for name, value in settings.items():
        if name == "api_keys":
            found += [entry.rpartition(":")[0] or entry for entry in value.split(",")]
        elif "://" in value:
            found.append(urlsplit(value).password or "")
        else:
            found.append(value)
    return [v for v in found if len(v) > 1]


@pytest.mark.parametrize(("overrides", "named"), WEAK_SECRETS)
def test_production_refuses_every_weak_secret_by_name_never_by_value(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], named: str
) -> None:
    # Set as an operator would (environment variables), so LOOPML_API_KEYS is parsed as text.
    monkeypatch.setenv("LOOPML_ENV", "production")
    for name, value in overrides.items():
        monkeypatch.setenv(f"LOOPML_{name.upper()}", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert named in message and "\n" not in message
    for value in _values(overrides):
        assert value not in message


def test_production_accepts_strong_distinct_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_ = {
        "LOOPML_ENV": "production",
        "LOOPML_ADMIN_TOKEN": GOOD,
        "LOOPML_ROUTING_SECRET": GOOD2,
        "LOOPML_METRICS_TOKEN": "metrics-0f3a9c51d2e84b77",
        "LOOPML_API_KEYS": "client-key-abcdef0123456789,9b1c04e2f7a8d3c6e5:predict+feedback",
        "LOOPML_DATABASE_URL": "postgresql://loopml:d41d8cd98f00b204e980@db:5432/loopml",
    }
    for name, value in secrets_.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.admin_token is not None and "k8Hq2" not in repr(s)
    assert len(s.api_keys) == 2


def test_development_allows_weak_and_shared_secrets_but_never_one_key_twice() -> None:
    # A laptop may use "dev" everywhere; a key given twice is ambiguous everywhere (whose roles?).
    s = load_settings(
        api_keys="x:admin,changeme:predict+feedback", admin_token="x", metrics_token="x"
    )
    assert len(s.api_keys) == 2
    with pytest.raises(ConfigError, match=r"entry 2 \(role admin\) is the same secret as") as err:
        load_settings(api_keys="k1,k1:admin")
    assert "k1" not in str(err.value)


#: issue 19 row 3's three keys, then one weak secret of each other kind (the same rule)
SERVE_CASES = [*WEAK_SECRETS[:3], WEAK_SECRETS[5], WEAK_SECRETS[8], WEAK_SECRETS[10]]


@pytest.mark.parametrize(("overrides", "named"), SERVE_CASES)
def test_serve_refuses_to_start_with_a_weak_secret(
    tmp_path: Path, overrides: dict[str, str], named: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env = clean | {
        "LOOPML_HOME": str(tmp_path / "home"),
        "LOOPML_CONFIG": str(tmp_path / "absent.toml"),
        "LOOPML_ENV": "production",
        "LOOPML_ADMIN_TOKEN": GOOD2,
        **{f"LOOPML_{name.upper()}": value for name, value in overrides.items()},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "loopml", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr
    shown = proc.stdout + proc.stderr
    assert all(v not in shown for v in [*_values(overrides), GOOD2])
    assert not (tmp_path / "home").exists(), "nothing started"


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
