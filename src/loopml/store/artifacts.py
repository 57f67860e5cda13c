"""Hashes of a model version's files: what registration records and serving checks.

A version is trusted when every file it downloads has the SHA-256 and size recorded in the loopml
database at registration, and no file was added or removed. The artifact store alone cannot vouch
for its own content: whoever can write a pickle there could otherwise run code in every server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["FileHashes", "differences", "hash_tree"]

FileHashes = dict[str, tuple[str, int]]
"""relative POSIX path -> (SHA-256 hex digest, size in bytes)"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> FileHashes:
    """SHA-256 and size of every file under ``root`` (symlinks are refused: they could point
    anywhere, and a registered model never contains one)."""
    out: FileHashes = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"{path.relative_to(root).as_posix()} is a symbolic link")
        if path.is_file():
            out[path.relative_to(root).as_posix()] = (_sha256(path), path.stat().st_size)
    return out


def differences(recorded: FileHashes, actual: FileHashes) -> list[str]:
    """The paths that differ (changed, missing or added), sorted; empty when all match."""
    return sorted(p for p in recorded.keys() | actual.keys() if recorded.get(p) != actual.get(p))
