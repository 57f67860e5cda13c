"""Removing deleted texts from the training splits stored in MLflow (ML Test Score, Data 5).

Every training run logs the rows it learned from and was tested on (``data/<split>.parquet``);
retraining reads the champion's splits back and adds feedback texts, so a text that
``loopml data forget`` or ``purge`` deleted from the database would live on in those files and in
every later model. :func:`scrub_splits` rewrites each split file that holds such a text without
it, in place (same artifact path), and tags the run with how many rows were removed and when.
Texts are matched by SHA-256, the hash serving logs for every text, so it also works with
``LOOPML_LOG_TEXT=false``.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Set
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from loopml.config import Settings

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

__all__ = ["REMOVED_TAG", "REWRITTEN_TAG", "scrub_splits", "text_hash"]

#: run tags: rows removed from its splits so far, and when they were last rewritten
REMOVED_TAG = "loopml.privacy.rows_removed"
REWRITTEN_TAG = "loopml.privacy.rewritten_at"

_SPLITS_DIR = "data"
# Every training run carries this tag (pipeline.train); tuning trials, monitoring and rollout
# runs do not, and hold no splits.
_TRAINING_TAG = "loopml.dataset_version"


def text_hash(text: str) -> str:
    """The SHA-256 serving logs for every text (``predictions.text_hash``)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _training_runs(client: MlflowClient, experiment_id: str) -> Iterator[Run]:
    """Every training run of the experiment, deleted ones too (their artifacts stay readable
    until ``mlflow gc``)."""
    from mlflow.entities import ViewType

    token = None
    while True:
        page = client.search_runs(
            [experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        yield from (run for run in page if _TRAINING_TAG in run.data.tags)
        token = page.token
        if not token:
            return


def _matches(frame: pd.DataFrame, hashes: Set[str], domain: str | None) -> pd.Series:
    rows = frame["domain"] == domain if domain is not None and "domain" in frame else None
    if domain is not None and rows is None:
        return pd.Series(False, index=frame.index)
    texts = frame["text"] if rows is None else frame.loc[rows, "text"]
    hit = texts.astype(str).map(text_hash).isin(hashes)
    return hit.reindex(frame.index, fill_value=False)


def _scrub_run(
    client: MlflowClient, run: Run, hashes: Set[str], domain: str | None, tmp: Path
) -> int:
    """Rewrite the run's split files without the matching rows; the number of rows removed."""
    run_id = run.info.run_id
    removed = 0
    for item in client.list_artifacts(run_id, _SPLITS_DIR):
        if item.is_dir or not item.path.endswith(".parquet"):
            continue
        local = Path(client.download_artifacts(run_id, item.path, str(tmp)))
        frame = pd.read_parquet(local)
        if "text" not in frame:
            continue
        hit = _matches(frame, hashes, domain)
        if not hit.any():
            continue
        frame[~hit].to_parquet(local)
        client.log_artifact(run_id, str(local), artifact_path=_SPLITS_DIR)  # same path: replaced
        removed += int(hit.sum())
    if removed:
        before = int(run.data.tags.get(REMOVED_TAG, "0") or 0)
        client.set_tag(run_id, REMOVED_TAG, str(before + removed))
        client.set_tag(run_id, REWRITTEN_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
    return removed


def scrub_splits(
    settings: Settings, hashes: Set[str], *, domain: str | None = None
) -> dict[str, Any]:
    """Remove the rows whose text hashes to one of ``hashes`` (only rows of ``domain``, if
    given) from the split files of every training run of the settings' experiment.

    Returns what was rewritten: the run ids and the number of rows removed (no text, no hash).
    MLflow's errors reach the caller: nothing is deleted from the database before this succeeds.
    """
    from loopml.tracking import configure_mlflow

    done: dict[str, Any] = {"runs": [], "rows": 0}
    embedded = settings.home_dir / "mlflow.db"
    if not hashes or (not settings.tracking_uri and not embedded.exists()):
        return done  # nothing to remove, or no run was ever logged (do not create the store)
    client = configure_mlflow(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return done
    for run in _training_runs(client, experiment.experiment_id):
        with tempfile.TemporaryDirectory(prefix="loopml-scrub-") as tmp:
            removed = _scrub_run(client, run, hashes, domain, Path(tmp))
        if removed:
            done["runs"].append(run.info.run_id)
            done["rows"] += removed
    return done
