"""The one-host stack (deploy/compose): docker-compose accepts it; it sets only real settings,
probes real endpoints, keeps its state in named volumes and its secrets in .env; the proxy,
Prometheus, Alertmanager and Grafana configs fit the services and pass their own tools' checks.
Offline: no image is pulled and no container started."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import ROOT, app_paths, check_loopml_args, clean_env, need_binary, run

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
CADDYFILE = COMPOSE_DIR / "caddy" / "Caddyfile"
PROMETHEUS_YML = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = COMPOSE_DIR.parent / "alertmanager" / "alertmanager.yml"
SCRIPTS = [
    COMPOSE_DIR / "postgres" / "init-databases.sh",
    COMPOSE_DIR / "minio" / "init.sh",
    COMPOSE_DIR / "gen-env.sh",
]

SERVING = ("loopml-1", "loopml-2")
# Where each stateful service keeps its state: it must be a named volume.
STATE = {
    "postgres": "/var/lib/postgresql/data",
    "minio": "/data",
    "loopml-1": "/var/lib/loopml",
    "loopml-2": "/var/lib/loopml",
    "controller": "/var/lib/loopml",
    "train": "/var/lib/loopml",
    "prometheus": "/prometheus",
    "alertmanager": "/alertmanager",
    "grafana": "/var/lib/grafana",
}
ONE_SHOT = {"minio-init", "train"}
# Long-running services without an HTTP endpoint or CLI probe of their own.
NO_HEALTHCHECK = {"controller"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEYS|ACCESS_KEY")


def compose_text() -> str:
    """compose.yaml without its comments."""
    return re.sub(r"(?m)(^|\s)#.*$", "", COMPOSE.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def compose_config(env_file: Path) -> Any:
    docker_compose = need_binary("docker-compose", "the Debian package docker-compose")
    return run(
        docker_compose,
        "-f",
        str(COMPOSE),
        "--env-file",
        str(env_file),
        "--profile",
        "bootstrap",
        "config",
        cwd=COMPOSE_DIR,
    )


@cache
def rendered() -> dict[str, Any]:
    """``docker-compose config`` of the stack with .env.example (every profile)."""
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@cache
def raw() -> dict[str, Any]:
    """compose.yaml as written (anchors merged, ${VAR} not interpolated)."""
    config: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return config


def services() -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = rendered()["services"]
    return svcs


def loopml_image_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if s["image"].startswith("loopml:")}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of every volume or bind mount."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            out[parts[1]] = parts[0]
        else:
            out[volume["target"]] = volume.get("source", "")
    return out


def host_path(service: str, container_path: str) -> Path:
    """The file of the repository that ``service`` sees at ``container_path`` (bind mounts)."""
    for target, source in sorted(mounts(services()[service]).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return Path(source) / Path(container_path).relative_to(target)
    raise AssertionError(f"{service} has no mount for {container_path}")


# --- docker-compose accepts the stack --------------------------------------------------------


def test_docker_compose_config_accepts_the_stack() -> None:
    assert set(services()) == {
        "postgres",
        "minio",
        "minio-init",
        "mlflow",
        "loopml-1",
        "loopml-2",
        "controller",
        "train",
        "proxy",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert raw()["services"]["train"]["profiles"] == ["bootstrap"]


def test_compose_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    text = compose_text()
    required = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*):\?", text))
    assert {
        "POSTGRES_PASSWORD",
        "LOOPML_ADMIN_TOKEN",
        "MINIO_ROOT_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "ALERTMANAGER_WEBHOOK_URL",
    } <= required
    env = read_env_file(ENV_EXAMPLE)
    without = tmp_path / "without-secrets.env"
    without.write_text("".join(f"{k}={v}\n" for k, v in env.items() if k not in required))
    result = compose_config(without)
    assert result.returncode != 0
    assert "set " in result.stderr and "deploy/compose/.env" in result.stderr, result.stderr


def test_every_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", compose_text()))
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set(), "add these to deploy/compose/.env.example"
    assert documented - used - {"COMPOSE_PROJECT_NAME"} == set(), "unused in compose.yaml"


def test_env_example_holds_placeholders_only() -> None:
    required = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*):\?", compose_text()))
    env = read_env_file(ENV_EXAMPLE)
    for key in required:
        assert "replace-me" in env[key], f"{key} in .env.example must be a replace-me placeholder"
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert "deploy/compose/.env" in ignored, ".env must be git-ignored"


def test_gen_env_replaces_every_placeholder(tmp_path: Path) -> None:
    result = run("sh", str(COMPOSE_DIR / "gen-env.sh"))
    assert result.returncode == 0, result.stderr
    generated = tmp_path / ".env"
    generated.write_text(result.stdout)
    env = read_env_file(generated)
    assert set(env) == set(read_env_file(ENV_EXAMPLE))
    left = {k for k, v in env.items() if "replace-me" in v}
    assert left == {"ALERTMANAGER_WEBHOOK_URL"}  # a URL only its owner knows
    assert len(env["LOOPML_ADMIN_TOKEN"]) >= 32
    assert env["POSTGRES_PASSWORD"] != env["PG_LOOPML_PASSWORD"]


# --- loopml containers ------------------------------------------------------------------------


def generated_services(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The loopml services of the stack rendered with a ``gen-env.sh`` env file (real secrets)."""
    env_file = tmp_path / ".env"
    env_file.write_text(run("sh", str(COMPOSE_DIR / "gen-env.sh")).stdout)
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    svcs: dict[str, dict[str, Any]] = yaml.safe_load(result.stdout)["services"]
    return {n: s for n, s in svcs.items() if s["image"].startswith("loopml:")}


def test_the_example_placeholders_are_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loopml.config import load_settings
    from loopml.errors import ConfigError

    env = environment(services()["controller"])
    for key, value in env.items():
        if key.startswith("LOOPML_"):
            monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings()


def test_loopml_variables_are_real_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loopml.config import Settings, load_settings

    settings = {f"LOOPML_{name.upper()}" for name in Settings.model_fields}
    # Read outside Settings: the TOML file's path (config.py) and the audit-log actor (registry.py).
    src = "\n".join(p.read_text() for p in (ROOT / "src" / "loopml").rglob("*.py"))
    extra = {v for v in ("LOOPML_CONFIG", "LOOPML_ACTOR") if f'environ.get("{v}"' in src}
    assert extra == {"LOOPML_CONFIG", "LOOPML_ACTOR"}
    assert set(loopml_image_services()) == {"mlflow", *SERVING, "controller", "train"}
    for name, service in generated_services(tmp_path).items():
        env = {k: v for k, v in environment(service).items() if k.startswith("LOOPML_")}
        assert set(env) - settings - extra == set(), f"{name} sets unknown settings"
        # The values validate as production settings (admin-token rules included).
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        loaded = load_settings()
        if name != "mlflow":
            assert loaded.env == "production"
            assert loaded.tracking_uri == "http://mlflow:5000"
            assert loaded.db_url.startswith("postgresql+psycopg://loopml@postgres:5432/loopml")
        for key in env:
            monkeypatch.delenv(key)


def test_loopml_commands_parse_with_the_real_cli() -> None:
    for service in loopml_image_services().values():
        if service.get("entrypoint"):
            continue  # mlflow: checked below
        check_loopml_args(command(service))
    assert command(services()["controller"]) == ["controller"]
    assert command(services()["train"]) == ["train", "--promote"]
    for name in SERVING:
        assert command(services()[name])[:1] == ["serve"]
        assert "0.0.0.0" in command(services()[name])


def test_mlflow_server_flags_are_real() -> None:
    from mlflow.cli import cli

    service = services()["mlflow"]
    assert service["entrypoint"] == ["/usr/bin/tini", "--", "mlflow"]
    args = command(service)
    assert args[0] == "server"
    server = cli.commands["server"]
    with server.make_context("server", args[1:]) as ctx:
        params = ctx.params
    assert params["backend_store_uri"].startswith("postgresql+psycopg://mlflow@postgres:5432/")
    assert params["artifacts_destination"] == "s3://mlflow-artifacts/"
    assert params["serve_artifacts"] is True
    assert params["host"] == "0.0.0.0"
    assert "mlflow:5000" in params["allowed_hosts"]
    env = environment(service)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    # its job-execution workers took 2 GiB of memory for jobs loopml never submits
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_healthchecks_probe_real_endpoints() -> None:
    paths = app_paths()
    for name in SERVING:
        probe = " ".join(services()[name]["healthcheck"]["test"])
        probed = re.findall(r"http://127\.0\.0\.1:8000(/[\w/-]*)", probe)
        assert probed == ["/readyz"], probe
        assert set(probed) <= paths
    from mlflow.server import app as mlflow_app

    mlflow_rules = {rule.rule for rule in mlflow_app.url_map.iter_rules()}
    expect = {
        "mlflow": "http://127.0.0.1:5000/health",
        "postgres": "pg_isready",
        "minio": "mc ready local",
        "prometheus": "http://127.0.0.1:9090/-/ready",
        "alertmanager": "http://127.0.0.1:9093/-/ready",
        "grafana": "http://127.0.0.1:3000/api/health",
        "proxy": "http://127.0.0.1:8080/healthz",
    }
    for name, probe in expect.items():
        assert probe in " ".join(services()[name]["healthcheck"]["test"]), name
    assert "/health" in mlflow_rules
    assert "/healthz" in paths


def test_every_long_running_service_is_probed_and_waited_for() -> None:
    for name, service in services().items():
        if name not in ONE_SHOT | NO_HEALTHCHECK:
            assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service.get("restart") == ("no" if name in ONE_SHOT else "unless-stopped"), name
        for dep, how in (service.get("depends_on") or {}).items():
            assert how["condition"] in {
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            }, (name, dep)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services()[dep], (name, dep)
    for name in (*SERVING, "controller", "train"):
        deps = services()[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["mlflow"]["condition"] == "service_healthy"
    assert services()["mlflow"]["depends_on"]["minio-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_loopml_containers_are_read_only_and_not_root() -> None:
    for name, service in loopml_image_services().items():
        assert service.get("read_only") is True, name
        assert any(str(t).startswith("/tmp") for t in service.get("tmpfs", [])), name
        user = str(service.get("user", "root")).split(":")[0]
        assert user not in {"", "0", "root"}, name
        assert "ALL" in service.get("cap_drop", []), name
        assert service["build"]["context"] == str(ROOT)
    for name in ("proxy", "prometheus", "alertmanager", "grafana", "minio-init"):
        assert str(services()[name].get("user", "0")).split(":")[0] not in {"0", "root"}, name


def test_state_lives_in_named_volumes() -> None:
    named = set(rendered()["volumes"])
    homes = []
    for name, path in STATE.items():
        source = mounts(services()[name]).get(path)
        assert source in named, f"{name}:{path} is not on a named volume ({source})"
        if name in SERVING:
            homes.append(source)
    assert len(set(homes)) == len(SERVING), "each replica needs its own spool volume"


def test_images_are_pinned() -> None:
    for name, service in services().items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image}"
        if not image.startswith("loopml:"):
            assert re.search(r"\d", tag), f"{name}: {image} is not a version tag"
    assert (
        raw()["services"]["loopml-1"]["image"] == "${LOOPML_IMAGE:-loopml}:${LOOPML_VERSION:-dev}"
    )


def test_image_tags_are_release_versions_without_a_v() -> None:
    # A git tag v1.2.0 publishes ghcr.io/<owner>/loopml:1.2.0: no "v" in any image tag named.
    text = ENV_EXAMPLE.read_text() + COMPOSE.read_text()
    assert not re.search(r"loopml:v\d", text), "image tags have no v (loopml:1.2.0)"
    assert re.search(r"loopml:1\.2\.0", ENV_EXAMPLE.read_text())


def test_every_published_port_is_set_in_env_with_todays_default() -> None:
    defaults = {
        "proxy": {"LOOPML_HTTP_PORT": "8080", "LOOPML_ADMIN_PORT": "8081"},
        "mlflow": {"MLFLOW_PORT": "5000"},
        "minio": {"MINIO_CONSOLE_PORT": "9001"},
        "prometheus": {"PROMETHEUS_PORT": "9090"},
        "alertmanager": {"ALERTMANAGER_PORT": "9093"},
        "grafana": {"GRAFANA_PORT": "3000"},
    }
    env = read_env_file(ENV_EXAMPLE)
    for name, service in raw()["services"].items():
        published = {}
        for port in service.get("ports", []):
            found = re.search(r"\$\{([A-Z_]+):-(\d+)\}:\d+$", str(port))
            assert found, f"{name}: {port} is not set by a variable"
            published[found.group(1)] = found.group(2)
        assert published == defaults.get(name, {}), name
        assert all(env[var] == default for var, default in published.items()), name
    admin = [p for p in raw()["services"]["proxy"]["ports"] if "LOOPML_ADMIN_PORT" in p]
    assert admin and all(p.startswith("127.0.0.1:") for p in admin)


def test_replicas_and_controller_get_the_grace_period_the_image_needs() -> None:
    # Dockerfile: in-flight requests (30 s) then the prediction-log drain: allow 75 s.
    assert "allow 75 s" in (ROOT / "Dockerfile").read_text()
    for name in (*SERVING, "controller"):
        assert services()[name]["stop_grace_period"] == "75s", name


def test_no_secret_literal_in_the_stack() -> None:
    for name, service in raw()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY.search(key):
                assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}", str(value)), (name, key)
    files = [
        COMPOSE,
        CADDYFILE,
        PROMETHEUS_YML,
        ALERTMANAGER_YML,
        *SCRIPTS,
        COMPOSE_DIR / "minio" / "mlflow-policy.json",
    ]
    for path in files:
        text = path.read_text()
        assert not re.search(r"://[^/\s:@]+:[^/\s@$]+@", text), f"{path}: password in a URL"
        assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", text), path
        assert not re.search(r"\b[0-9a-f]{32,}\b", text), f"{path}: a long hex literal"


# --- configs of the other services ------------------------------------------------------------


def test_proxy_balances_both_replicas_on_readiness_and_hides_metrics(tmp_path: Path) -> None:
    text = CADDYFILE.read_text()
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", text)
    assert upstreams is not None
    assert set(upstreams.group(1).split()) == {f"{name}:8000" for name in SERVING}
    assert re.search(r"health_uri /readyz", text)
    internal = re.search(r"@internal path ([^\n]+)", text)
    assert internal and "respond @internal 404" in text
    assert {"/metrics", "/v1/admin", "/v1/admin/*"} <= set(internal.group(1).split())
    # Everything else reaches the replicas, /static (the status page's CSS and JS) included.
    assert not re.search(r"(?m)^\s*(handle|route|respond|@\w+ path)[^\n]*/static", text)
    public = re.search(r"(?ms)^:8080 \{.*?^\}", text)
    admin_site = re.search(r"(?ms)^:8081 \{.*?^\}", text)
    assert public and "import replicas" in public.group(0)
    assert admin_site and "import replicas" in admin_site.group(0)
    assert host_path("proxy", "/etc/caddy/Caddyfile") == CADDYFILE
    caddy = need_binary("caddy", "the Debian package caddy")
    result = run(
        caddy,
        "validate",
        "--config",
        str(CADDYFILE),
        "--adapter",
        "caddyfile",
        env=clean_env(HOME=str(tmp_path)),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_both_replicas_and_loads_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["loopml"]["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:8000" for name in SERVING}  # job name used by the alert rules
    am = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]
    assert host_path("prometheus", "/etc/prometheus/prometheus.yml") == PROMETHEUS_YML
    rules = [host_path("prometheus", f) for f in config["rule_files"]]
    shipped = {p.name for p in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")}
    assert {p.name for p in rules} == shipped
    assert all(p.is_file() for p in rules), rules
    # promtool on a copy whose container paths point at the repository's files.
    config["rule_files"] = [str(p) for p in rules]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    promtool = need_binary("promtool", "the Debian package prometheus")
    result = run(promtool, "check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_sends_to_the_webhook_from_env(tmp_path: Path) -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    hooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert hooks and all(w["url_file"] == "/tmp/webhook_url" for w in hooks)
    service = services()["alertmanager"]
    start = " ".join(service["entrypoint"])
    # (`docker-compose config` keeps the $$ that stops compose from interpolating it)
    assert re.search(r'"\$\$?ALERTMANAGER_WEBHOOK_URL" > /tmp/webhook_url', start), start
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in start
    assert host_path("alertmanager", "/etc/alertmanager/alertmanager.yml") == ALERTMANAGER_YML
    # Debian's amtool (0.25) predates url_file (0.26+, the image runs 0.28): check the rest.
    for hook in hooks:
        hook["url"] = "http://webhook.example.invalid/"
        del hook["url_file"]
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(yaml.safe_dump(config))
    amtool = need_binary("amtool", "the Debian package prometheus-alertmanager")
    result = run(amtool, "check-config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_fits_the_stack() -> None:
    service = services()["grafana"]
    grafana = ROOT / "deploy" / "grafana"
    assert host_path("grafana", "/etc/grafana/provisioning") == grafana / "provisioning"
    providers = yaml.safe_load((grafana / "provisioning/dashboards/loopml.yml").read_text())
    dash_path = providers["providers"][0]["options"]["path"]
    assert host_path("grafana", dash_path) == grafana / "dashboards"
    assert list((grafana / "dashboards").glob("*.json"))
    datasource = (grafana / "provisioning/datasources/loopml.yml").read_text()
    assert "${PROMETHEUS_URL" in datasource
    assert environment(service)["PROMETHEUS_URL"] == "http://prometheus:9090"


def test_init_scripts_create_what_the_services_use() -> None:
    shellcheck = need_binary("shellcheck", "the Debian package shellcheck")
    for script in SCRIPTS:
        result = run(shellcheck, "--shell=sh", str(script))
        assert result.returncode == 0, result.stdout
    for script in ("backup.sh", "restore.sh"):
        text = (COMPOSE_DIR / script).read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        result = run(shellcheck, str(COMPOSE_DIR / script))
        assert result.returncode == 0, result.stdout
    sql = (COMPOSE_DIR / "postgres" / "init-databases.sh").read_text()
    mlflow_db = command(services()["mlflow"])[2].rsplit("/", 1)[1]
    loopml_db = environment(services()["loopml-1"])["LOOPML_DATABASE_URL"].rsplit("/", 1)[1]
    for db in (mlflow_db, loopml_db):
        assert f"CREATE DATABASE {db} OWNER {db};" in sql
    assert host_path("postgres", "/docker-entrypoint-initdb.d/10-init-databases.sh").is_file()
    bucket = environment(services()["minio-init"])["ARTIFACT_BUCKET"]
    assert f"s3://{bucket}/" in command(services()["mlflow"])
    assert f"arn:aws:s3:::{bucket}/*" in (COMPOSE_DIR / "minio" / "mlflow-policy.json").read_text()
    assert host_path("minio-init", "/init/init.sh").is_file()


def test_the_proxy_closes_idle_upstream_connections_before_the_server_does() -> None:
    # Else a request Caddy sends on a connection uvicorn is closing gets a 502, and a POST is
    # not retried on the other replica (seen once in the stack test during a rollout).
    from loopml.serving.server import KEEP_ALIVE_S

    caddyfile = (COMPOSE_DIR / "caddy" / "Caddyfile").read_text()
    transports = re.findall(r"transport http \{[^}]*?keepalive (\d+)s", caddyfile)
    assert transports, "the replicas' reverse_proxy sets no upstream keepalive"
    assert all(int(seconds) < KEEP_ALIVE_S for seconds in transports), transports
