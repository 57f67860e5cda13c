# loopml: one image for `serve` (default), `controller`, `train`, `monitor`, and an MLflow tracking
# server (entrypoint `/usr/bin/tini -- mlflow server ...`), built from this repository:
#
#   make image                                    # loopml:dev on python:3.11-slim-bookworm
#   make image BASE_IMAGE=loopml-base:bookworm    # without registry access: deploy/docker/base-image.sh
#   docker run --read-only --tmpfs /tmp -v loopml:/var/lib/loopml -p 8000:8000 loopml:dev
#
# The root filesystem may be read-only: everything written goes to LOOPML_HOME (/var/lib/loopml, a
# volume) or to /tmp (mount a tmpfs). PID 1 is tini (Debian's package): it forwards SIGTERM to
# loopml (or mlflow) and reaps orphaned processes; a Python program as PID 1 gets no default signal
# handling from the kernel. On SIGTERM `serve` stops accepting connections, finishes
# in-flight requests (up to 30 s), then drains the prediction journal to the database (up to 15 s,
# plus at most 11 s for a write already in flight; about 1 s in all with a healthy database):
# allow 75 s (docker stop -t 75, terminationGracePeriodSeconds: 75). See deploy/docker/README.md.
#
# checkov:skip=CKV_DOCKER_7: the base image is a build argument whose default is pinned to a version tag (python:3.11-slim-bookworm); checkov cannot resolve ARGs in FROM

# Bookworm, pinned: the tini version below is bookworm's.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: the wheel, then a virtual environment with it and its dependencies ----------------
FROM ${BASE_IMAGE} AS build

# s3: boto3, gcs: google-cloud-storage (MLflow's s3:// and gs:// artifact destinations).
ARG EXTRAS=s3,gcs
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
SHELL ["/bin/sh", "-eu", "-c"]

# Dependencies first, pinned: requirements.lock.txt holds the runtime dependencies and the s3 and
# gcs extras at the versions the tests ran on (`make lock`). This layer is reused until it changes.
COPY requirements.lock.txt /tmp/requirements.lock.txt
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install "setuptools>=77" "wheel>=0.43" \
 && python3 -m venv /opt/loopml \
 && /opt/loopml/bin/pip install --requirement /tmp/requirements.lock.txt

# Then the package: a wheel, installed into the venv (its dependencies are already there; the lock
# constrains whatever another EXTRAS would add on top).
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && wheel="$(ls /dist/loopml-*.whl)" \
 && /opt/loopml/bin/pip install --constraint /tmp/requirements.lock.txt "loopml[${EXTRAS}] @ file://${wheel}" \
 && /opt/loopml/bin/pip check \
 && /opt/loopml/bin/loopml --help > /dev/null

# ---- runtime: the venv on a clean base, a non-root user, nothing written outside the volume ---
FROM ${BASE_IMAGE} AS runtime

SHELL ["/bin/sh", "-eu", "-c"]

# tini as PID 1 (ENTRYPOINT below), from Debian bookworm; the package lists are not kept.
ARG TINI_VERSION=0.19.0-1+b3
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && /usr/bin/tini --version

# HOME and the working directory are the volume; caches that may be lost go to /tmp.
ENV PATH=/opt/loopml/bin:$PATH \
    LOOPML_HOME=/var/lib/loopml \
    HOME=/var/lib/loopml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    XDG_CACHE_HOME=/tmp/cache \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

RUN groupadd --system --gid 10001 loopml \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/loopml --shell /usr/sbin/nologin loopml \
 && mkdir -p /var/lib/loopml \
 && chown 10001:10001 /var/lib/loopml \
 && chmod 0750 /var/lib/loopml

COPY --from=build /opt/loopml /opt/loopml
COPY deploy/docker/healthcheck.py /opt/loopml/healthcheck.py

USER 10001:10001
WORKDIR /var/lib/loopml
VOLUME ["/var/lib/loopml"]
EXPOSE 8000

# `serve`: GET /healthz on its --port; `mlflow server`: GET /health; other commands: alive.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-I", "/opt/loopml/healthcheck.py"]

# Labels last: a new revision or date does not invalidate the layers above.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="loopml" \
      org.opencontainers.image.description="Closed-loop MLOps for text classification: serve, controller, train, monitor" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# The commit the image was built from, tagged on every model it trains (loopml.git_commit): the
# image has no .git to ask.
ENV LOOPML_GIT_COMMIT="${REVISION}"

# tini forwards SIGTERM/SIGINT to loopml and reaps zombies; `--entrypoint /usr/bin/tini` with
# `-- mlflow server ...` runs the tracking server the same way.
ENTRYPOINT ["/usr/bin/tini", "--", "loopml"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- spark: the runtime plus a Java runtime and pyspark, for `loopml batch score --engine spark`
# (docs/batch.md). Not the default: `make image` and the workflows build --target runtime;
# `make image-spark` builds this one (loopml-spark:dev). The same image runs the driver (the
# command below, or `loopml batch score ...`) and, on Kubernetes, the executors
# (deploy/docker/spark-entrypoint.sh `executor`, what Spark's executor pods are started with).
FROM runtime AS spark

SHELL ["/bin/sh", "-eu", "-c"]
USER 0

# Debian bookworm's Java 17 runtime (security updates move its version: not pinned); procps: ps,
# which Spark's launch scripts use.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/* \
 && java -version

# pyspark as pinned by the `spark` extra of pyproject.toml (a test compares).
ARG PYSPARK_VERSION=4.3.0
RUN /opt/loopml/bin/pip install "pyspark==${PYSPARK_VERSION}" \
 && /opt/loopml/bin/pip check \
 && /opt/loopml/bin/python -c "import pyspark"

# snappy-java (Spark's Parquet reader) unpacks its native library into java.io.tmpdir and maps it
# from there, which a noexec /tmp refuses (`docker run --tmpfs /tmp` mounts it noexec): the task
# fails with UnsatisfiedLinkError. Unpacked here once, on the read-only image, and loaded from it
# by every JVM of the image (driver and executors: JDK_JAVA_OPTIONS below).
RUN jar="$(ls /opt/loopml/lib/python3*/site-packages/pyspark/jars/snappy-java-*.jar)" \
 && mkdir -p /opt/loopml/native \
 && /opt/loopml/bin/python3 -c 'import platform, sys, zipfile; \
name = "org/xerial/snappy/native/Linux/%s/libsnappyjava.so" % platform.machine(); \
open("/opt/loopml/native/libsnappyjava.so", "wb").write(zipfile.ZipFile(sys.argv[1]).read(name))' "$jar"

COPY deploy/docker/spark-entrypoint.sh /opt/loopml/spark-entrypoint.sh

# Spark workers run this interpreter; Spark writes its scratch files to /tmp (a tmpfs or emptyDir).
ENV PYSPARK_PYTHON=/opt/loopml/bin/python3 \
    SPARK_LOCAL_DIRS=/tmp/spark \
    JDK_JAVA_OPTIONS=-Dorg.xerial.snappy.lib.path=/opt/loopml/native

USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/loopml/spark-entrypoint.sh"]
CMD ["batch", "score", "--help"]
