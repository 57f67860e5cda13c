"""Reading a training run's data splits (``data/<name>.parquet``) back from MLflow."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["load_splits"]


def load_splits(
    client: MlflowClient,
    run_id: str,
    names: Iterable[str],
    *,
    columns: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """The splits ``names`` (e.g. ``train``, ``test``) logged by training run ``run_id``.

    Each file is downloaded into a temporary folder that is removed once the frames are read, so
    repeated calls (the controller monitors in a loop) leave nothing behind. ``columns`` reads
    only those columns. MLflow's errors (``MlflowException``, ``OSError``) reach the caller, which
    knows what a missing split means for it.
    """
    import mlflow.artifacts

    frames: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="loopml-splits-") as tmp:
        for name in names:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"data/{name}.parquet",
                dst_path=str(Path(tmp) / name),
                tracking_uri=client.tracking_uri,
            )
            frames[name] = pd.read_parquet(path, columns=list(columns) if columns else None)
    return frames
