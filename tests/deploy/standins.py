"""Stand-ins for registry images that cannot be pulled here, built from Debian's packages (and
PyPI's moto for S3) on the local base image ``loopml-base:bookworm``.

``build_standin("postgres")`` returns ``loopml-standin-postgres:test``, building it only when it is
missing or its directory (``tests/deploy/standins/<name>/``) changed: the image carries the
directory's content hash as a label. ``build_loopml_image(name)`` builds loopml's own image from
this tree (``make image``) on the same base; both make the base (``deploy/docker/base-image.sh``)
when it is missing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

__all__ = ["BASE_IMAGE", "NAMES", "build_loopml_image", "build_standin", "standin_tag"]

HERE = Path(__file__).resolve().parent / "standins"
ROOT = HERE.parents[2]
NAMES = ("postgres", "caddy", "prometheus", "alertmanager", "s3")
BASE_IMAGE = "loopml-base:bookworm"
_LABEL = "org.loopml.standin.hash"


def standin_tag(name: str) -> str:
    """The image tag of stand-in ``name``."""
    return f"loopml-standin-{name}:test"


def _content_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _docker() -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise RuntimeError("docker is not installed (the Debian package docker.io)")
    return docker


def build_standin(name: str, *, timeout: float = 1200) -> str:
    """Build stand-in ``name`` unless an image with the same content hash exists; its tag."""
    if name not in NAMES:
        raise ValueError(f"unknown stand-in {name!r}; one of {', '.join(NAMES)}")
    docker, directory, tag = _docker(), HERE / name, standin_tag(name)
    wanted = _content_hash(directory)
    found = subprocess.run(
        [docker, "image", "inspect", "--format", f'{{{{index .Config.Labels "{_LABEL}"}}}}', tag],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode == 0 and found.stdout.strip() == wanted:
        return tag
    ensure_base_image()
    # --network host: the build reaches Debian's mirror and PyPI through this host's proxy.
    built = subprocess.run(
        [docker, "build", "--network", "host", "--label", f"{_LABEL}={wanted}", "-t", tag, "."],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if built.returncode != 0:
        log = f"{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
        raise RuntimeError(f"building {tag} failed:\n{log}")
    return tag


def ensure_base_image(*, timeout: float = 900) -> None:
    """Make ``loopml-base:bookworm`` from Debian's packages unless it exists (about a minute)."""
    docker = _docker()
    if subprocess.run([docker, "image", "inspect", BASE_IMAGE], capture_output=True).returncode:
        made = subprocess.run(
            [str(ROOT / "deploy" / "docker" / "base-image.sh"), BASE_IMAGE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if made.returncode != 0:
            raise RuntimeError(
                f"base-image.sh failed (needs root and debootstrap):\n{made.stderr[-3000:]}"
            )


def build_loopml_image(name: str, *, timeout: float = 1800) -> str:
    """``make image`` of this tree as ``name:test`` on the local base; its tag. Docker's layer
    cache makes a second build of the same tree take seconds, whatever its name."""
    ensure_base_image()
    command = ["make", "--no-print-directory", "image", f"BASE_IMAGE={BASE_IMAGE}"]
    built = subprocess.run(
        [*command, f"IMAGE={name}", "VERSION=test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"make image failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}")
    return f"{name}:test"


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:] or NAMES:
        print(build_standin(arg))
