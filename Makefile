# loopml: `make demo` and `make test` each set up everything they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck unit install system-deps bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian tools the tests use: promtool/prometheus (rule tests, scrape test), wrk and hey (load),
# chromium (status page); docker-compose (`config` on deploy/compose, no engine needed), amtool
# (Alertmanager config), caddy (`caddy validate` on the proxy config), shellcheck (actionlint runs
# it on the workflows' scripts). Installed only when missing; needs root (CI and the dev machines are).
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
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/loopml demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/train_bench.py

clean:
	rm -rf $(VENV) .loopml .pytest_cache .mypy_cache .ruff_cache
