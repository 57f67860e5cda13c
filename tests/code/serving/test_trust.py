"""Feedback as a privileged channel, in units: key roles, the label rate limit, the keyed canary
hash and its secret, the per-key cap of retraining labels, the trusted-holdout gate."""

from __future__ import annotations

import hashlib
import stat
import uuid
from pathlib import Path

import pandas as pd
import pytest
from starlette.datastructures import Headers

from loopml.config import load_settings, routing_secret
from loopml.control.retrain import cap_per_key
from loopml.errors import ConfigError, LoopmlError, RateLimitedError
from loopml.pipeline.gate import trusted_rows
from loopml.routing import Routing
from loopml.serving.auth import ANONYMOUS, Guard, key_id
from loopml.serving.ratelimit import RateLimiter
from loopml.serving.router import choose_variant

PRED, FEED, BOTH, ADMIN = (
    "pred-key-0123456789",
    "feed-key-0123456789",
    "both-key-0123456789",
    "admin-key-0123456789",
)
KEYS = f"{PRED},{FEED}:feedback,{BOTH}:predict+feedback,{ADMIN}:admin"


def status(call: object) -> int:
    """The HTTP status of the loopml error ``call()`` raises (200 if none)."""
    try:
        call()  # type: ignore[operator]
    except LoopmlError as exc:
        return exc.http_status
    return 200


def test_roles_per_key() -> None:
    guard = Guard(load_settings(api_keys=KEYS))
    h = {k: Headers({"x-api-key": k}) for k in (PRED, FEED, BOTH, ADMIN)}
    table = {
        (key, role): status(lambda k=key, r=role: guard.client(h[k], r))
        for key in h
        for role in ("predict", "feedback")
    }
    assert table == {
        (PRED, "predict"): 200,
        (PRED, "feedback"): 403,
        (FEED, "predict"): 403,
        (FEED, "feedback"): 200,
        (BOTH, "predict"): 200,
        (BOTH, "feedback"): 200,
        (ADMIN, "predict"): 403,
        (ADMIN, "feedback"): 403,
    }
    assert status(lambda: guard.client(Headers({}), "feedback")) == 401
    assert status(lambda: guard.client(Headers({"x-api-key": "nope"}), "feedback")) == 403
    principal = guard.client(Headers({"authorization": f"Bearer {BOTH}"}), "feedback")
    assert principal.key_id == key_id(BOTH) and BOTH not in principal.key_id
    assert (
        principal.key_id
        == "k-" + hashlib.sha256(b"loopml-key-id:" + BOTH.encode()).hexdigest()[:12]
    )
    # The admin API: a key with the admin role opens it (no token set), others may not.
    assert guard.admin(Headers({"authorization": f"Bearer {ADMIN}"})) == key_id(ADMIN)
    assert status(lambda: guard.admin(Headers({"authorization": f"Bearer {BOTH}"}))) == 403
    assert status(lambda: guard.admin(Headers({}))) == 401


def test_without_keys_feedback_is_open_only_in_development() -> None:
    dev = Guard(load_settings())
    assert dev.client(Headers({}), "feedback").key_id == ANONYMOUS
    prod = Guard(load_settings(env="production"))
    assert prod.client(Headers({})).key_id == ANONYMOUS  # predict stays open
    with pytest.raises(LoopmlError, match="feedback role in production") as err:
        prod.client(Headers({}), "feedback")
    assert err.value.http_status == 403


def test_a_bad_role_is_a_config_error_that_hides_the_key() -> None:
    with pytest.raises(ConfigError, match="unknown role") as err:
        load_settings(api_keys="fine-key,sekrit-key-42:feedbak")
    assert "sekrit" not in str(err.value) and "entry 2" in str(err.value)
    with pytest.raises(ConfigError, match="LOOPML_ROUTING_SECRET"):
        load_settings(env="production", routing_secret="short")


def test_rate_limit_per_key() -> None:
    now = [1000.0]
    limit = RateLimiter(60, clock=lambda: now[0])  # 60 labels a minute, burst 60
    limit.take("a", 50)
    limit.take("b", 60)  # another key has its own bucket
    with pytest.raises(RateLimitedError) as err:
        limit.take("a", 20)
    assert err.value.http_status == 429
    assert err.value.http_headers == {"Retry-After": "10"}  # 10 labels short at 1 label/s
    now[0] += 10
    limit.take("a", 20)
    with pytest.raises(RateLimitedError, match="send smaller lists"):
        limit.take("c", 61)


def test_keyed_canary_sticks_and_hides_the_split() -> None:
    routing = Routing("m", champion="1", challenger="2", mode="canary", weight=0.5)
    keys = [uuid.uuid4().hex for _ in range(4000)]
    a = [choose_variant(routing, k, secret=b"secret-a") for k in keys]
    assert a == [choose_variant(routing, k, secret=b"secret-a") for k in keys]
    assert abs(a.count("challenger") / len(keys) - 0.5) < 0.03

    def unkeyed(key: str) -> str:  # what main did: anyone could compute it
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return "challenger" if int.from_bytes(digest, "big") % 10_000 < 5000 else "champion"

    b = [choose_variant(routing, k, secret=b"secret-b") for k in keys]
    same_as_unkeyed = sum(x == unkeyed(k) for x, k in zip(a, keys, strict=True)) / len(keys)
    same_as_b = sum(x == y for x, y in zip(a, b, strict=True)) / len(keys)
    print(
        f"agreement with the unkeyed hash {same_as_unkeyed:.3f},"
        f" with another secret {same_as_b:.3f}"
    )
    # Independent splits agree on about half of the keys; identical ones on all.
    assert 0.45 < same_as_unkeyed < 0.55
    assert 0.45 < same_as_b < 0.55
    long_secret = b"x" * 100  # over BLAKE2b's 64-byte key limit: still works
    assert choose_variant(routing, "k", secret=long_secret) in ("champion", "challenger")


def test_routing_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    first = routing_secret(settings)
    path = tmp_path / "home" / "routing_secret"
    assert len(first) == 64 and path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert routing_secret(settings) == first
    assert [p.name for p in path.parent.iterdir()] == ["routing_secret"]
    given = load_settings(home=tmp_path / "home", routing_secret="shared-by-all-replicas")
    assert routing_secret(given) == b"shared-by-all-replicas"


def test_cap_per_key_and_provenance() -> None:
    rows = pd.DataFrame(
        {
            "text": [f"t{i}" for i in range(10)],
            "label": ["negative"] * 10,
            "domain": ["feedback"] * 10,
            "key_id": ["k-a"] * 7 + ["k-b"] * 2 + ["unknown"],
        }
    )
    same, prov = cap_per_key(rows, 1.0)
    assert len(same) == 10 and prov["by_key"] == {"k-a": 7, "k-b": 2, "unknown": 1}
    assert prov["dropped_by_cap"] == {} and prov["top_key_share"] == 0.7
    capped, prov = cap_per_key(rows, 0.3)
    assert capped["key_id"].value_counts().to_dict() == {"k-a": 3, "k-b": 2, "unknown": 1}
    assert list(capped["text"][:3]) == ["t0", "t1", "t2"]  # each key's first (newest) rows
    assert prov["used"] == 6 and prov["dropped_by_cap"] == {"k-a": 4}


def test_trusted_rows_leave_out_feedback() -> None:
    test = pd.DataFrame(
        {"text": list("abc"), "label": ["x"] * 3, "domain": ["airline", "feedback", "other"]}
    )
    assert list(trusted_rows(test)["text"]) == ["a", "c"]
    assert len(trusted_rows(test.drop(columns="domain"))) == 3
