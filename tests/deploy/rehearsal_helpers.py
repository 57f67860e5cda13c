"""The cluster rehearsal's machinery: a rendered overlay's pods as containers on the Docker engine.

:func:`plan_pods` translates every pod template (Deployments, Jobs, CronJobs' jobTemplates) into a
:class:`Pod` with Kubernetes' semantics (``command`` replaces the image's ENTRYPOINT, ``args`` its
CMD, ``$(VAR)`` expands from the container's environment), and checks on the way what a cluster
would only show at run time: ConfigMap and Secret keys that do not exist, ``LOOPML_*`` variables
that are no loopml setting (Settings ignores unknown ones, so a typo would pass silently), ports a
Service or a probe names that the container does not declare. :func:`check_commands` checks the
executables and the loopml command lines against the image; :func:`docker_run_argv` gives the
``docker run`` line of a pod; :class:`Engine` runs them on one bridge network and cleans up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

#: ``LOOPML_*`` variables that loopml reads outside Settings (the settings file's path, the actor
#: written to the audit log); any other ``LOOPML_*`` key must be a Settings field.
NON_SETTING_VARS = frozenset({"LOOPML_CONFIG", "LOOPML_ACTOR"})

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_QUANTITY = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


class RehearsalError(AssertionError):
    """The rendered manifests ask for something the rehearsal (and so a cluster) cannot give."""


def setting_vars() -> frozenset[str]:
    """Every ``LOOPML_*`` variable loopml's Settings reads."""
    from loopml.config import Settings

    return frozenset(f"LOOPML_{name.upper()}" for name in Settings.model_fields)


def render(
    overlay: str,
    workdir: Path,
    *,
    cluster_env: Mapping[str, str] | None = None,
    deploy: Path = ROOT / "deploy",
) -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/k8s/overlays/<overlay>`` in a copy of ``deploy`` under
    ``workdir``, with ``cluster.env.example`` as the overlay's ``cluster.env`` (the real one is
    git-ignored and written by Terraform: the example is what a fresh clone has), its keys
    ``cluster_env`` replaced (each must be a key of the example)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RehearsalError("kubectl (with kustomize) is not installed: on dev and CI machines")
    copy = workdir / "deploy"
    shutil.copytree(deploy, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    target = copy / "k8s" / "overlays" / overlay
    example = target / "cluster.env.example"
    replace = dict(cluster_env or {})
    if example.is_file():
        lines = example.read_text().splitlines()
        keys = {line.split("=", 1)[0] for line in lines if "=" in line and line[0] != "#"}
        if set(replace) - keys:
            raise RehearsalError(f"cluster.env.example has no key {sorted(set(replace) - keys)}")
        out = [
            f"{key}={replace[key]}" if (key := line.split("=", 1)[0]) in replace else line
            for line in lines
        ]
        (target / "cluster.env").write_text("\n".join(out) + "\n")
    elif replace:
        raise RehearsalError(f"overlays/{overlay} has no cluster.env.example")
    done = subprocess.run(
        [kubectl, "kustomize", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RehearsalError(f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def memory_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2Gi``, ``1G``, ``1000``) in bytes."""
    text = str(quantity)
    for suffix, factor in _QUANTITY.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity (``500m``, ``2``) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` is a ``$``, unknown
    references stay as written (returned too: in a cluster they would reach the program as is)."""
    unknown: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name in env:
            return env[name]
        if _ENV_NAME.fullmatch(name):  # `$(hostname)` in a shell script is shell's, not ours
            unknown.append(name)
        return match.group(0)

    return _VAR_REF.sub(sub, text), unknown


@dataclass
class Probe:
    """One probe: an HTTP GET, a TCP connect or a command, on the container's resolved port."""

    kind: str  # startup | liveness | readiness
    action: str  # httpGet | tcpSocket | exec
    port: int | None = None
    path: str = "/"
    scheme: str = "HTTP"
    command: list[str] = field(default_factory=list)
    period_s: float = 10
    failure_threshold: int = 3


@dataclass
class Pod:
    """One pod template's single container, translated for ``docker run``."""

    kind: str
    name: str
    namespace: str
    container: str
    manifest_image: str
    labels: dict[str, str]
    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]
    user: str | None
    group_add: list[int]
    read_only: bool
    cap_drop: list[str]
    cap_add: list[str]
    no_new_privileges: bool
    empty_dirs: list[str]  # mount paths
    named_volumes: dict[str, tuple[str, bool]]  # mount path -> (volume name, read only)
    files: dict[str, tuple[dict[str, str], bool]]  # mount path -> ({file: content}, read only)
    memory: int | None
    cpus: float | None
    ports: dict[str, int]  # port name (or the number as text) -> containerPort
    probes: dict[str, Probe]
    grace_s: int
    pre_stop_sleep_s: int
    replicas: int
    deadline_s: int | None
    aliases: list[str] = field(default_factory=list)
    service_ports: dict[str, int] = field(default_factory=dict)  # "svc:port" -> targetPort

    @property
    def workload(self) -> str:
        return f"{self.kind}/{self.name}"


def _pod_templates(
    objects: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload object, pod template) of every Deployment, StatefulSet, Job and CronJob."""
    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec", {})
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield obj, spec["template"]
        elif kind == "CronJob":
            yield obj, spec["jobTemplate"]["spec"]["template"]


def _by_name(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def _data(obj: dict[str, Any]) -> dict[str, str]:
    """A ConfigMap's or a Secret's keys and (decoded) values."""
    import base64

    data = {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in data.items()}
    return data | dict(obj.get("stringData") or {})


def _selects(selector: dict[str, Any], labels: Mapping[str, str]) -> bool:
    """Does a label selector (Service form or matchLabels/matchExpressions form) select labels?"""
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (
            op == "NotIn" and labels.get(key) in values
        ):
            return False
        if (op == "Exists") != (key in labels) and op in {"Exists", "DoesNotExist"}:
            return False
    return bool(match or selector.get("matchExpressions"))


def plan_pods(
    objects: list[dict[str, Any]],
    *,
    secrets: Mapping[str, Mapping[str, str]],
    settings: frozenset[str] | None = None,
    max_replicas: int = 2,
) -> dict[str, Pod]:
    """Every pod template of the rendered ``objects`` as a :class:`Pod`, keyed by workload name.

    ``secrets`` are the Secrets a cluster operator creates outside the manifests (name -> key ->
    value); a Secret or key a manifest references that is neither there nor rendered fails.
    Deployments run ``min(replicas, max_replicas)`` copies (an HPA's minReplicas when it owns the
    replica count). Every problem is collected, then raised at once."""
    settings = setting_vars() if settings is None else settings
    config_maps = {n: _data(o) for n, o in _by_name(objects, "ConfigMap").items()}
    all_secrets = {n: _data(o) for n, o in _by_name(objects, "Secret").items()} | {
        n: dict(v) for n, v in secrets.items()
    }
    hpa_min = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"].get("minReplicas", 1)
        for o in objects
        if o.get("kind") == "HorizontalPodAutoscaler"
    }
    errors: list[str] = []
    pods: dict[str, Pod] = {}
    for obj, template in _pod_templates(objects):
        pod = _plan_one(obj, template, config_maps, all_secrets, settings, errors)
        if pod is None:
            continue
        spec = obj.get("spec", {})
        if obj["kind"] == "Deployment":
            wanted = spec.get("replicas", hpa_min.get(pod.name, 1))
            pod.replicas = max(1, min(int(wanted), max_replicas))
        pods[pod.name] = pod
    _attach_services(objects, pods, errors)
    if errors:
        raise RehearsalError("the rendered manifests cannot run:\n- " + "\n- ".join(errors))
    return pods


def _plan_one(
    obj: dict[str, Any],
    template: dict[str, Any],
    config_maps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
    settings: frozenset[str],
    errors: list[str],
) -> Pod | None:
    kind, name = obj["kind"], obj["metadata"]["name"]
    where = f"{kind}/{name}"
    namespace = obj["metadata"].get("namespace", "default")
    spec = template["spec"]
    containers = spec.get("containers", [])
    if spec.get("initContainers") or len(containers) != 1:
        errors.append(
            f"{where}: the rehearsal runs pods of exactly one container (no init/sidecars)"
        )
        return None
    (c,) = containers
    where = f"{where} container {c['name']}"
    env = _environment(where, name, namespace, spec, c, config_maps, secrets, errors)
    unknown_settings = sorted(
        k for k in env if k.startswith("LOOPML_") and k not in settings | NON_SETTING_VARS
    )
    if unknown_settings:
        errors.append(
            f"{where}: {', '.join(unknown_settings)} is no loopml setting "
            "(Settings ignores unknown LOOPML_* variables)"
        )
    command = _expand_all(where, "command", c.get("command"), env, errors)
    args = _expand_all(where, "args", c.get("args"), env, errors)

    pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    merged = pod_sc | sc
    uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
    if merged.get("runAsNonRoot") and uid == 0:
        errors.append(f"{where}: runAsNonRoot with runAsUser 0")
    user = None if uid is None else (f"{uid}:{gid}" if gid is not None else str(uid))
    caps = sc.get("capabilities", {})

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    empty_dirs: list[str] = []
    named: dict[str, tuple[str, bool]] = {}
    files: dict[str, tuple[dict[str, str], bool]] = {}
    for mount in c.get("volumeMounts", []):
        path, ro = mount["mountPath"], bool(mount.get("readOnly", False))
        volume = volumes.get(mount["name"])
        if volume is None:
            errors.append(f"{where}: volumeMount {mount['name']!r} names no volume of the pod")
        elif "emptyDir" in volume:
            empty_dirs.append(path)
        elif "persistentVolumeClaim" in volume:
            named[path] = (volume["persistentVolumeClaim"]["claimName"], ro)
        elif "configMap" in volume or "secret" in volume:
            source = "configMap" if "configMap" in volume else "secret"
            ref = volume[source].get("name") or volume[source].get("secretName")
            data = (config_maps if source == "configMap" else secrets).get(ref)
            if data is None:
                errors.append(f"{where}: volume {mount['name']!r} names unknown {source} {ref!r}")
                continue
            items = volume[source].get("items") or [{"key": k, "path": k} for k in data]
            missing = [i["key"] for i in items if i["key"] not in data]
            if missing:
                errors.append(f"{where}: {source} {ref!r} has no key {', '.join(missing)}")
            content = {i["path"]: data[i["key"]] for i in items if i["key"] in data}
            if "subPath" in mount:
                content = {"": content.get(mount["subPath"], "")}
            files[path] = (content, True)
        else:
            errors.append(
                f"{where}: volume {mount['name']!r} is of a kind the rehearsal cannot run"
            )

    if sc.get("readOnlyRootFilesystem"):
        writable = [p for p in empty_dirs] + [p for p, (_, ro) in named.items() if not ro]
        for key, value in env.items():
            is_dir = key.endswith(("HOME", "_DIR", "CONFIGDIR")) or key.startswith("XDG_")
            if is_dir and value.startswith("/") and not _under(value, writable):
                errors.append(
                    f"{where}: {key}={value} is on the read-only root filesystem "
                    f"(writable mounts: {', '.join(writable) or 'none'})"
                )

    ports = {}
    for p in c.get("ports", []):
        ports[str(p["containerPort"])] = p["containerPort"]
        if "name" in p:
            ports[p["name"]] = p["containerPort"]
    probes = {}
    for kind_ in ("startup", "liveness", "readiness"):
        raw = c.get(f"{kind_}Probe")
        if raw:
            probe = _probe(where, kind_, raw, ports, errors)
            if probe is not None:
                probes[kind_] = probe

    limits = c.get("resources", {}).get("limits", {})
    pre_stop = c.get("lifecycle", {}).get("preStop", {})
    if pre_stop and "sleep" not in pre_stop:
        errors.append(f"{where}: only a preStop sleep can be rehearsed, not {sorted(pre_stop)}")
    job_spec = obj["spec"] if kind == "Job" else obj["spec"].get("jobTemplate", {}).get("spec", {})
    return Pod(
        kind=kind,
        name=name,
        namespace=namespace,
        container=c["name"],
        manifest_image=c["image"],
        labels=dict(template.get("metadata", {}).get("labels", {})),
        command=command,
        args=args,
        env=env,
        user=user,
        group_add=[pod_sc["fsGroup"]] if "fsGroup" in pod_sc else [],
        read_only=bool(sc.get("readOnlyRootFilesystem", False)),
        cap_drop=list(caps.get("drop", [])),
        cap_add=list(caps.get("add", [])),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        empty_dirs=empty_dirs,
        named_volumes=named,
        files=files,
        memory=memory_bytes(limits["memory"]) if "memory" in limits else None,
        cpus=cpu_cores(limits["cpu"]) if "cpu" in limits else None,
        ports=ports,
        probes=probes,
        grace_s=int(spec.get("terminationGracePeriodSeconds", 30)),
        pre_stop_sleep_s=int(pre_stop.get("sleep", {}).get("seconds", 0)),
        replicas=1,
        deadline_s=job_spec.get("activeDeadlineSeconds"),
    )


def _environment(
    where: str,
    pod_name: str,
    namespace: str,
    spec: dict[str, Any],
    c: dict[str, Any],
    config_maps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
    errors: list[str],
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom in order, then env (whose
    values may use ``$(VAR)`` of the variables defined before them)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        kind = "configMap" if "configMapRef" in source else "secret"
        ref = source.get("configMapRef") or source.get("secretRef") or {}
        data = (config_maps if kind == "configMap" else secrets).get(ref.get("name", ""))
        if data is None:
            if not ref.get("optional"):
                errors.append(f"{where}: envFrom names unknown {kind} {ref.get('name')!r}")
            continue
        env |= {source.get("prefix", "") + k: v for k, v in data.items()}
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": namespace,
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
    }
    for var in c.get("env", []):
        if "value" in var or "valueFrom" not in var:
            env[var["name"]], _ = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            kind = "configMap" if "configMapKeyRef" in source else "secret"
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
            data = (config_maps if kind == "configMap" else secrets).get(ref["name"])
            if data is None or ref["key"] not in data:
                if not ref.get("optional"):
                    errors.append(
                        f"{where}: env {var['name']} names {kind} {ref['name']!r} key "
                        f"{ref['key']!r}, which the rehearsal does not know"
                    )
                continue
            env[var["name"]] = data[ref["key"]]
        elif "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
            env[var["name"]] = fields[source["fieldRef"]["fieldPath"]]
        else:
            errors.append(
                f"{where}: env {var['name']} comes from {source}, which cannot be rehearsed"
            )
    return env


def _under(path: str, mounts: list[str]) -> bool:
    return any(Path(path) == Path(m) or Path(m) in Path(path).parents for m in mounts)


def _expand_all(
    where: str, what: str, values: list[Any] | None, env: Mapping[str, str], errors: list[str]
) -> list[str] | None:
    if values is None:
        return None
    out = []
    for value in values:
        text, unknown = expand(str(value), env)
        if unknown:
            errors.append(
                f"{where}: {what} uses $({', '.join(unknown)}), "
                "which its environment does not define"
            )
        out.append(text)
    return out


def _probe(
    where: str, kind: str, raw: dict[str, Any], ports: dict[str, int], errors: list[str]
) -> Probe | None:
    timing = {
        "period_s": raw.get("periodSeconds", 10),
        "failure_threshold": raw.get("failureThreshold", 3),
    }
    if "exec" in raw:
        return Probe(kind, "exec", command=list(raw["exec"]["command"]), **timing)
    action = "httpGet" if "httpGet" in raw else "tcpSocket" if "tcpSocket" in raw else None
    if action is None:
        errors.append(f"{where}: {kind}Probe {sorted(raw)} cannot be rehearsed")
        return None
    port = raw[action]["port"]
    resolved = ports.get(str(port)) if isinstance(port, str) else int(port)
    if resolved is None:
        errors.append(
            f"{where}: {kind}Probe names port {port!r}, which the container does not declare"
        )
        return None
    return Probe(
        kind,
        action,
        port=resolved,
        path=raw[action].get("path", "/"),
        scheme=raw[action].get("scheme", "HTTP"),
        **timing,
    )


def _attach_services(
    objects: list[dict[str, Any]], pods: dict[str, Pod], errors: list[str]
) -> None:
    """Each Service's name (and its DNS forms) becomes a network alias of the pods it selects;
    its target ports must be ports those containers declare."""
    for svc in (o for o in objects if o.get("kind") == "Service"):
        name, ns = svc["metadata"]["name"], svc["metadata"].get("namespace", "default")
        selector = svc["spec"].get("selector") or {}
        chosen = [
            p
            for p in pods.values()
            if p.namespace == ns and p.kind != "CronJob" and _selects(selector, p.labels)
        ]
        if not chosen:
            errors.append(f"Service/{name}: its selector {selector} matches no pod template")
        for pod in chosen:
            pod.aliases += [
                name,
                f"{name}.{ns}",
                f"{name}.{ns}.svc",
                f"{name}.{ns}.svc.cluster.local",
            ]
            for port in svc["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                resolved = pod.ports.get(str(target)) if isinstance(target, str) else int(target)
                if resolved is None:
                    errors.append(
                        f"Service/{name}: targetPort {target!r} is no port of {pod.workload} "
                        f"(it declares {sorted(pod.ports)})"
                    )
                elif resolved != port["port"]:
                    # A Docker alias cannot map ports: clients would dial the Service port.
                    errors.append(
                        f"Service/{name}: port {port['port']} -> targetPort {resolved} cannot be "
                        "rehearsed on Docker (aliases do not map ports)"
                    )
                else:
                    pod.service_ports[f"{name}:{port['port']}"] = resolved


# ---- the image --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """What the rehearsal needs to know of the image: its ENTRYPOINT and CMD, and which of the
    executables the manifests name it has."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    executables: frozenset[str]


def argv(pod: Pod, facts: ImageFacts) -> list[str]:
    """The process a pod starts: ``command`` replaces ENTRYPOINT (and drops CMD), ``args`` CMD."""
    if pod.command is not None:
        return [*pod.command, *(pod.args or [])]
    return [*facts.entrypoint, *(pod.args if pod.args is not None else facts.cmd)]


def _programs(line: list[str]) -> list[str]:
    """The executables a command line runs: its first word, and the program after ``tini --``."""
    if not line:
        return []
    if Path(line[0]).name == "tini":
        rest = line[1:]
        rest = (
            rest[rest.index("--") + 1 :]
            if "--" in rest
            else [a for a in rest if not a.startswith("-")]
        )
        return [line[0], *rest[:1]]
    return line[:1]


_SHELLS = {"sh", "bash", "dash"}
_USERINFO = re.compile(r"://[^/@\s]+@")  # a URL's user:password, never shown
_LOOPML_CALL = re.compile(r"(?:^|[\s;&|(])loopml((?:[ \t]+[^\s;&|)\"'`]+)*)", re.MULTILINE)


def _script_calls(line: list[str]) -> list[list[str]]:
    """The loopml command lines inside a shell script the pod runs (``sh -c SCRIPT``)."""
    import shlex

    for i, word in enumerate(line[:-1]):
        if Path(word).name in _SHELLS:
            flag = next(
                (j for j in range(i + 1, len(line)) if re.fullmatch(r"-\w*c\w*", line[j])), None
            )
            if flag is not None and flag + 1 < len(line):
                script = line[flag + 1]
                return [shlex.split(m.group(1)) for m in _LOOPML_CALL.finditer(script)]
    return []


def image_facts(image: str, pods: Mapping[str, Pod]) -> ImageFacts:
    """Read ENTRYPOINT and CMD, and look up every executable ``pods`` name, in ``image``."""
    inspected = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    entry, cmd = tuple(inspected.get("Entrypoint") or ()), tuple(inspected.get("Cmd") or ())
    base = ImageFacts(entry, cmd, frozenset())
    names = sorted({p for pod in pods.values() for p in _programs(argv(pod, base))} | {"loopml"})
    found = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
        'for x; do command -v "$x" >/dev/null && echo "$x"; done; true', "sh", *names,
    )  # fmt: skip
    return ImageFacts(entry, cmd, frozenset(found.stdout.split()))


def check_commands(pods: Mapping[str, Pod], facts: ImageFacts) -> None:
    """Every executable a pod starts is in the image, and every loopml command line parses with
    the real CLI (an unknown command or option fails here, not in a crash loop)."""
    from deploy_helpers import app_paths, check_loopml_args

    errors = []
    for pod in pods.values():
        line = argv(pod, facts)
        programs = _programs(line)
        calls = _script_calls(line)
        if calls:
            programs.append("loopml")
        elif programs and Path(programs[-1]).name == "loopml":
            calls = [line[line.index(programs[-1]) + 1 :]]
        missing = [p for p in programs if p not in facts.executables]
        if missing:
            shown = " ".join(_USERINFO.sub("://***@", word) for word in line[:6])
            errors.append(f"{pod.workload}: the image has no {', '.join(missing)} (runs {shown})")
        for rest in calls:
            try:
                check_loopml_args(rest)
            except Exception as exc:  # click's UsageError (typer vendors click) or an assert
                errors.append(f"{pod.workload}: `loopml {' '.join(rest)}` does not parse: {exc}")
        if calls and calls[-1][:1] == ["serve"]:
            paths = app_paths()
            errors += [
                f"{pod.workload}: {probe.kind}Probe GET {probe.path}: loopml serve has no such path"
                for probe in pod.probes.values()
                if probe.action == "httpGet" and probe.path.split("?")[0] not in paths
            ]
    if errors:
        raise RehearsalError(
            "the image cannot run what the manifests say:\n- " + "\n- ".join(errors)
        )


# ---- the engine -------------------------------------------------------------------------------


def docker(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``docker ARGS``; a failure raises with its stderr (never the environment: secrets)."""
    done = subprocess.run(
        ["docker", *args],
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RehearsalError(f"docker {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return done


def docker_run_argv(
    pod: Pod, *, image: str, name: str, network: str, prefix: str, workdir: Path,
    cpu_count: int | None = None,
) -> list[str]:  # fmt: skip
    """The ``docker run -d`` arguments of one replica of ``pod`` (environment passed by name only:
    the values go in the process environment, never on a command line). emptyDir volumes and
    ConfigMap/Secret files are made under ``workdir``."""
    out = ["run", "-d", "--name", name, "--hostname", name, "--network", network]
    if pod.kind in {"Deployment", "StatefulSet", "DaemonSet"}:
        out += ["--restart", "on-failure"]  # restartPolicy Always; counted (restarts())
    out += [a for alias in pod.aliases for a in ("--network-alias", alias)]
    if pod.user is not None:
        out += ["--user", pod.user]
    out += [a for g in pod.group_add for a in ("--group-add", str(g))]
    if pod.read_only:
        out.append("--read-only")
    out += [a for cap in pod.cap_drop for a in ("--cap-drop", cap)]
    out += [a for cap in pod.cap_add for a in ("--cap-add", cap)]
    if pod.no_new_privileges:
        out += ["--security-opt", "no-new-privileges:true"]
    for path in pod.empty_dirs:
        # emptyDir: an empty directory the kubelet makes 0777, hiding what the image has there.
        # A host directory, not a tmpfs: Docker 20.10 gives a tmpfs over an image directory that
        # directory's mode with root as owner (/var/lib/loopml: 0750 root, unwritable). The
        # sizeLimit is not enforced.
        source = workdir / "emptydir" / name / path.strip("/").replace("/", "_")
        source.mkdir(parents=True, exist_ok=True)
        source.chmod(0o777)
        out += ["--mount", f"type=bind,source={source},destination={path}"]
    for path, (volume, ro) in pod.named_volumes.items():
        out += [
            "--mount",
            f"type=volume,source={prefix}-{volume},destination={path}"
            + (",readonly" if ro else ""),
        ]
    for path, (content, _) in pod.files.items():
        source = workdir / "files" / name / path.strip("/").replace("/", "_")
        if "" in content:  # subPath: one file
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(content[""])
        else:
            source.mkdir(parents=True, exist_ok=True)
            for file, text in content.items():
                (source / file).write_text(text)
        out += ["--mount", f"type=bind,source={source},destination={path},readonly"]
    if pod.memory:
        out += ["--memory", str(pod.memory)]
    if pod.cpus:
        out += ["--cpus", str(min(pod.cpus, cpu_count or os.cpu_count() or 1))]
    out += [a for key in pod.env for a in ("-e", key)]
    line = list(pod.command or [])
    if pod.command is not None:
        out += ["--entrypoint", line[0]]
    out.append(image)
    out += line[1:] + list(pod.args or [])
    return out


class Engine:
    """Containers, volumes and one bridge network named with ``prefix``, removed on exit."""

    def __init__(self, prefix: str, image: str, workdir: Path) -> None:
        self.prefix, self.image, self.workdir = prefix, image, workdir
        self.network = f"{prefix}-net"
        self.containers: list[str] = []
        self.volumes: set[str] = set()
        self.timings: list[tuple[str, float]] = []

    def __enter__(self) -> Engine:
        docker("network", "create", self.network)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self.containers):
            docker("rm", "-f", "-v", name, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        docker("network", "rm", self.network, check=False)

    def step(self, label: str, started: float) -> None:
        self.timings.append((label, time.monotonic() - started))

    def run(self, argv_: list[str], name: str, env: Mapping[str, str] | None = None) -> str:
        self.containers.append(name)
        docker(*argv_, env=env or {})
        return name

    def start(self, pod: Pod, replica: int, extra_env: Mapping[str, str] | None = None) -> str:
        """Start one replica of ``pod``; its container name."""
        name = f"{self.prefix}-{pod.name}" + (f"-{replica}" if pod.replicas > 1 else "")
        env = pod.env | dict(extra_env or {})
        self.volumes |= {f"{self.prefix}-{v}" for v, _ in pod.named_volumes.values()}
        plan = Pod(**{**pod.__dict__, "env": env})
        argv_ = docker_run_argv(
            plan,
            image=self.image,
            name=name,
            network=self.network,
            prefix=self.prefix,
            workdir=self.workdir,
        )
        return self.run(argv_, name, env)

    def wait(self, name: str, timeout: float) -> int:
        """Wait for a container to exit; its exit code."""
        done = docker("wait", name, timeout=timeout)
        return int(done.stdout.strip())

    def logs(self, name: str, tail: int = 60, limit: int = 6000) -> str:
        """The last ``tail`` lines of a container's output, at most ``limit`` characters."""
        done = docker("logs", "--tail", str(tail), name, check=False)
        return (done.stdout + done.stderr)[-limit:]

    def exit_code(self, name: str) -> int:
        return int(docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())

    def running(self, name: str) -> bool:
        """Running, or about to be restarted (a Deployment's restartPolicy)."""
        state = docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        return state in {"running", "restarting", "created"}

    def restarts(self, name: str) -> int:
        return int(docker("inspect", "--format", "{{.RestartCount}}", name).stdout.strip())
