"""promtool: the Prometheus config and rules are valid and the alerts fire when they should."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def need_binary(name: str) -> str:
    """The path of ``name``; fail (not skip) when missing: `make setup` installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y prometheus")
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_config_is_valid() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid() -> None:
    files = sorted(f"rules/{p.name}" for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    result = _promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass_every_time() -> None:
    """promtool evaluates rule groups in random order: 20 runs catch an order dependence that
    one run hides (the backlog alert once failed 4 runs in 15 reading another group's record)."""
    tests = sorted(p.name for p in (PROMETHEUS_DIR / "tests").glob("*_test.yml"))
    assert tests, "no promtool rule tests found"
    args = ("test", "rules", *(f"tests/{t}" for t in tests))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: _promtool(*args), range(20)))
    failed = [r.stdout + r.stderr for r in results if r.returncode != 0]
    assert not failed, f"{len(failed)} of 20 runs failed; the first:\n{failed[0]}"


def _rule_files() -> list[Path]:
    return sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))


def test_no_rule_reads_a_record_of_another_group() -> None:
    """A rule may read a recorded series only when that record comes earlier in its own group:
    groups run independently, so a cross-group read sees this or the previous evaluation."""
    groups = [g for f in _rule_files() for g in yaml.safe_load(f.read_text())["groups"]]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    offenders = []
    for group in groups:
        earlier: set[str] = set()
        for rule in group["rules"]:
            names = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*(?::[a-zA-Z0-9_]+)+", rule["expr"]))
            late = (names & recorded) - earlier
            if late:
                offenders.append(f"{group['name']}/{rule.get('alert') or rule['record']}: {late}")
            if "record" in rule:
                earlier.add(rule["record"])
    assert offenders == []


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        r["alert"]
        for path in (PROMETHEUS_DIR / "rules").glob("*.yml")
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tested = set()
    for path in (PROMETHEUS_DIR / "tests").glob("*_test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts - tested == set()
