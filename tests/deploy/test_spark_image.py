"""The Dockerfile's spark target on a real Docker engine: built as ``make image-spark`` builds it
(on the Debian-made base when the official one cannot be pulled, like test_image.py), then
``loopml batch score --engine spark --spark-master 'local[2]'`` in a hardened container
(non-root, read-only root filesystem, a noexec tmpfs /tmp, no capabilities) on real tweets, with a
model that this test trains and promotes into a LOOPML_HOME mounted at the same path (MLflow
records absolute artifact paths): the rows, ids and probabilities of the model in process.
Run with ``-s`` to see the build and run times.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_world import champion_home
from test_image import (  # noqa: F401 (base_image, docker_engine: fixtures)
    HARDENING,
    IMAGE_NAME,
    IMAGE_TAG,
    REPO,
    _docker,
    _report,
    base_image,
    docker_engine,
    make_image,
)

from loopml.config import Settings
from loopml.data import Dataset
from loopml.registry import CHAMPION

# A cold build (base image, the runtime's dependencies, a JRE, pyspark) took 7.5 minutes here.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

SPARK_IMAGE = f"{IMAGE_NAME}-spark:{IMAGE_TAG}"
IMAGE_UID = 10001
ROWS = 3_000
CLASSES = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def spark_image(base_image: str) -> str:  # noqa: F811
    """The image built by ``make image-spark`` (the runtime target first, then spark)."""
    return make_image("image-spark", base_image, SPARK_IMAGE, timeout=2400)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_tweets: Dataset) -> Iterator[Settings]:
    """A LOOPML_HOME (MLflow and the loopml database in SQLite) with a champion trained here."""
    with champion_home(tmp_path_factory.mktemp("spark-image-home"), small_tweets) as settings:
        yield settings


def _in_process(settings: Settings, texts: list[str]) -> pd.DataFrame:
    import mlflow

    from loopml.tracking import configure_mlflow

    configure_mlflow(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{CHAMPION}")
    return model.predict(pd.DataFrame({"text": texts}))  # type: ignore[no-any-return]


def test_pyspark_in_the_image_is_the_spark_extras_pin(spark_image: str) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (pin,) = extras["optional-dependencies"]["spark"]
    code = "import pyspark; print(pyspark.__version__)"
    proc = _docker("run", "--rm", *HARDENING, "--entrypoint", "python3", spark_image, "-c", code)
    assert pin == f"pyspark=={proc.stdout.strip()}"


def test_spark_batch_in_a_hardened_container_equals_the_model_in_process(
    spark_image: str, store: Settings, tweets: Dataset
) -> None:
    home = store.home
    texts = tweets.frame["text"].tolist()[:ROWS]
    ids = [f"t{i}" for i in range(ROWS)]
    (home / "in").mkdir()
    table = pa.table({"tweet_id": ids, "text": texts})
    pq.write_table(table, home / "in" / "tweets.parquet", row_group_size=500)
    expected = _in_process(store, texts)
    # The image's user (not this test's) writes the output and the prediction log.
    subprocess.run(["chmod", "-R", "a+rwX", str(home)], check=True)

    start = time.monotonic()
    proc = _docker(
        "run", "--rm", *HARDENING,
        "-e", f"LOOPML_HOME={home}", "-e", f"LOOPML_CONFIG={home / 'loopml.toml'}",
        "-v", f"{home}:{home}",
        spark_image,
        "batch", "score", "--engine", "spark", "--spark-master", "local[2]",
        "--input", str(home / "in"), "--output", str(home / "out"), "--id-column", "tweet_id",
        "--json",
        timeout=1200, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - start

    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    _report(
        f"loopml batch score --engine spark local[2] in the container: {seconds:.1f} s for "
        f"{ROWS:,} tweets ({summary['seconds']:.1f} s inside the job)"
    )
    assert (summary["rows_scored"], summary["rows_failed"]) == (ROWS, 0)
    parts = sorted((home / "out").glob("part-*.parquet"))
    out = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert out["row_id"].tolist() == list(range(ROWS))
    assert out["id"].tolist() == ids
    assert out["label"].tolist() == expected["label"].tolist()
    probs = out[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert np.abs(probs - expected[[f"p_{c}" for c in CLASSES]].to_numpy()).max() < 1e-6
    assert set(out["batch_id"]) == {summary["batch_id"]}
    # Who wrote the output: the image's non-root user.
    owners = {p.stat().st_uid for p in (home / "out").iterdir()}
    assert owners == {IMAGE_UID}
    assert json.loads(_docker("inspect", spark_image).stdout)[0]["Config"]["User"] == (
        f"{IMAGE_UID}:{IMAGE_UID}"
    )
