"""API keys scoped by model (``key:roles@m1+m2``) and the LOOPML_MODELS setting."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from loopml.config import Settings, api_key_models, load_settings, parse_api_key
from loopml.errors import ConfigError, PermissionDeniedError
from loopml.serving.auth import Guard


def test_a_scope_after_the_roles_names_the_models() -> None:
    entry = "k-0123456789abcdef:predict+feedback@sentiment+topic"
    assert parse_api_key(entry) == ("k-0123456789abcdef", frozenset({"predict", "feedback"}))
    assert api_key_models(entry) == frozenset({"sentiment", "topic"})
    assert api_key_models("k-0123456789abcdef:predict") is None
    assert api_key_models("k-0123456789abcdef") is None


@pytest.mark.parametrize("scope", ["", "a++b", "bad name", "x/y"])
def test_a_malformed_scope_is_refused_without_echoing_the_key(scope: str) -> None:
    with pytest.raises(ValueError, match="model names joined by") as info:
        api_key_models(f"secret-key-0123456789:predict@{scope}")
    assert "secret-key" not in str(info.value)
    with pytest.raises(ValueError, match="entry 1: the model scope"):
        Settings(api_keys=[f"secret-key-0123456789:predict@{scope}"])


@pytest.mark.parametrize("roles", ["admin", "predict+admin"])
def test_the_admin_role_cannot_be_scoped(roles: str) -> None:
    """An admin key reads every model's status and acts on any: a scope would be a lie."""
    with pytest.raises(ConfigError, match="entry 1: the admin role acts on every model") as info:
        load_settings(api_keys=[f"secret-key-0123456789:{roles}@sentiment"])
    assert "secret-key" not in str(info.value)  # what users see never repeats the key
    load_settings(api_keys=[f"secret-key-0123456789:{roles}"])  # unscoped: fine


def test_a_scoped_key_is_refused_on_other_models_and_an_unscoped_one_is_not() -> None:
    settings = Settings(
        api_keys=["scoped-0123456789abcdef:predict@sentiment", "all-0123456789abcdef01"]
    )
    guard = Guard(settings)
    scoped = guard.client(Headers({"x-api-key": "scoped-0123456789abcdef"}))
    scoped.check_model("sentiment", "predict")
    with pytest.raises(PermissionDeniedError, match="may not predict on model 'topic'"):
        scoped.check_model("topic", "predict")
    anyone = guard.client(Headers({"x-api-key": "all-0123456789abcdef01"}))
    anyone.check_model("topic", "predict")
    assert anyone.models is None


def test_models_setting_lists_the_default_first_once() -> None:
    settings = Settings(model_name="sentiment", models="topic, sentiment,topic")
    assert settings.served_models == ["sentiment", "topic"]
    assert Settings(models="").served_models == ["sentiment"]
    assert Settings(models="*").models == ["*"]
    with pytest.raises(ValueError, match="stands alone"):
        Settings(models="*,topic")
    with pytest.raises(ValueError, match="not model names"):
        Settings(models="a b")
