# loopml: `make demo` and `make test` each set up everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
# make test also installs the transformers extra (torch, ONNX Runtime) and the spark extra
# (pyspark); make demo does not.
TEST_STAMP := $(VENV)/.installed-transformers
TORCH := torch==2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint format typecheck unit install system-deps tools k8s-generate k8s-render bench clean image image-spark base-image lock swagger-ui

# The runtime dependencies and the s3 and gcs extras, pinned (the image installs exactly these; the dev
# environment is constrained to them, so tests run on the versions that ship).
LOCK := requirements.lock.txt

# What `make demo` runs: the package and its runtime dependencies, nothing of the dev extra (test
# tools, browsers' drivers, Triton clients), which more than doubled a first `make demo`.
$(RUNTIME_STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --constraint $(LOCK) -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install -q --constraint $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# torch first and pinned: the CPU wheel. Left to resolve through the extra, pip could pull a
# multi-GB CUDA build.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q --constraint $(LOCK) -e '.[dev,transformers,spark]'
	touch $(TEST_STAMP)

# Re-resolve $(LOCK) from pyproject.toml (runtime dependencies + the s3 and gcs extras, Python
# 3.11) with uv (a dev dependency): keeps the pinned versions that still fit; `make lock LOCK_FLAGS=--upgrade`
# moves everything to the newest allowed (.github/workflows/deps.yml does, weekly). Other extras
# (e.g. transformers) stay out of the lock: the image installs only s3 and gcs.
LOCK_FLAGS ?=
lock:
	test -x $(BIN)/uv || $(MAKE) install
	$(BIN)/uv pip compile pyproject.toml --extra s3 --extra gcs --python-version 3.11 --quiet \
		--custom-compile-command "make lock" $(LOCK_FLAGS) -o $(LOCK)

# /docs serves Swagger UI from the package (src/loopml/serving/static/swagger-ui*), copied from the
# npm package swagger-ui-dist (npm checks the tarball's integrity). After a new version, put it and
# the printed SHA-256 sums in SWAGGER_UI of src/loopml/serving/routes/apidocs.py (a test compares).
SWAGGER_UI_VERSION ?= 5.35.0
SWAGGER_UI_DIR := src/loopml/serving/static
swagger-ui:
	tmp=$$(mktemp -d) && npm pack --silent --pack-destination $$tmp swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null \
		&& tar -xzf $$tmp/swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz -C $$tmp \
		&& cp $$tmp/package/swagger-ui-bundle.js $$tmp/package/swagger-ui.css \
			$$tmp/package/swagger-ui-bundle.js.LICENSE.txt $(SWAGGER_UI_DIR)/ \
		&& cp $$tmp/package/LICENSE $(SWAGGER_UI_DIR)/swagger-ui-LICENSE.txt \
		&& cp $$tmp/package/NOTICE $(SWAGGER_UI_DIR)/swagger-ui-NOTICE.txt; \
	status=$$?; rm -rf $$tmp; test $$status -eq 0
	cd $(SWAGGER_UI_DIR) && sha256sum swagger-ui-bundle.js swagger-ui.css

# Tools whose dependencies conflict with loopml's (checkov pins old packaging, cachetools and
# importlib-metadata, and its hcl2 fork replaces python-hcl2): their own venv, used by
# tests/deploy/test_k8s.py, test_terraform.py and test_image.py (the Dockerfile policies).
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30
$(TOOLS)/.installed-$(CHECKOV_VERSION):
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'
	touch $@

# Label Studio (the annotators' tool; tests/support/label_studio_server.py runs it for real): its
# Django pins clash with ours, so it gets a venv of its own too. The tests build a migrated data
# directory inside it once (loopml-template-<version>) and start each session on a copy.
LABEL_STUDIO := .venv-label-studio
LABEL_STUDIO_VERSION := 1.23.2
$(LABEL_STUDIO)/.installed-$(LABEL_STUDIO_VERSION):
	test -x $(LABEL_STUDIO)/bin/python || $(PY) -m venv $(LABEL_STUDIO)
	$(LABEL_STUDIO)/bin/pip install -q --upgrade pip
	$(LABEL_STUDIO)/bin/pip install -q 'label-studio==$(LABEL_STUDIO_VERSION)'
	touch $@

tools: $(TOOLS)/.installed-$(CHECKOV_VERSION) $(LABEL_STUDIO)/.installed-$(LABEL_STUDIO_VERSION)

# The PrometheusRule and Grafana dashboard ConfigMap of deploy/k8s come from deploy/prometheus and
# deploy/grafana: regenerate after editing those (a test fails while they differ).
k8s-generate: $(STAMP)
	$(BIN)/python deploy/k8s/generate.py

# The prod overlay reads overlays/prod/cluster.env (Terraform writes it): without one (a fresh
# clone), render a temporary copy with cluster.env.example.
k8s-render:
	@tmp="$$(mktemp -d)" && trap 'rm -rf "$$tmp"' EXIT && cp -R deploy/k8s "$$tmp/" \
	 && { test -f deploy/k8s/overlays/prod/cluster.env || cp deploy/k8s/overlays/prod/cluster.env.example "$$tmp/k8s/overlays/prod/cluster.env"; } \
	 && for o in dev prod; do kubectl kustomize "$$tmp/k8s/overlays/$$o" > /dev/null && echo "$$o: ok" || exit 1; done

# Debian tools the tests use: promtool/prometheus (rule tests, scrape test), wrk and hey (load),
# chromium (status page), the Docker engine and debootstrap (tests/deploy/test_image.py starts
# dockerd when it is not running); docker-compose (`config` on deploy/compose, no engine needed), amtool
# (Alertmanager config), caddy (`caddy validate` on the proxy config), shellcheck (actionlint runs
# it on the workflows' scripts), a Java runtime (pyspark: the Spark engine's tests). Installed only
# when missing; needs root (CI and the dev machines are).
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v hey >/dev/null || missing="$$missing hey"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v amtool >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v caddy >/dev/null || missing="$$missing caddy"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The container image (Dockerfile): loopml:dev, or loopml:$(VERSION) with VERSION=1.2.3.
# Without registry access: make base-image, then make image BASE_IMAGE=loopml-base:bookworm.
IMAGE ?= loopml
VERSION ?= dev
BASE_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE_IMAGE ?= loopml-base:bookworm
EXTRAS ?= s3,gcs
PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

image:
	docker build --network host \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg EXTRAS=$(EXTRAS) \
		--build-arg VERSION=$(if $(filter dev,$(VERSION)),$(PKG_VERSION)-dev,$(VERSION)) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
		--target runtime -t $(IMAGE):$(VERSION) .

# The image's spark target (a Java runtime and pyspark on top of the runtime): loopml-spark:dev.
image-spark: image
	docker build --network host \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg EXTRAS=$(EXTRAS) \
		--target spark -t $(IMAGE)-spark:$(VERSION) .

# A Python 3.11 base image from Debian's packages (debootstrap), for machines that cannot pull
# python:3.11-slim-bookworm; reused when it exists (FORCE=1 rebuilds).
base-image:
	deploy/docker/base-image.sh $(LOCAL_BASE_IMAGE)

demo: $(RUNTIME_STAMP)
	$(BIN)/loopml demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks deploy
	$(BIN)/ruff format --check src tests benchmarks deploy

# Apply the formatting that `make lint` checks.
format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks deploy

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(TEST_STAMP) system-deps tools lint typecheck
	$(BIN)/pytest

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/train_bench.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LABEL_STUDIO) .loopml .pytest_cache .mypy_cache .ruff_cache
