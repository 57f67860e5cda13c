#!/usr/bin/env bash
# `ruff format --check` on the Python files changed since BASE (a ratchet: files nobody touches
# keep their formatting until someone reformats them in one commit). Without a usable BASE (the
# first push of a branch), every file is checked.
set -euo pipefail
base="${1:-}"
if [[ -z "$base" || "$base" =~ ^0+$ ]] || ! git cat-file -e "$base^{commit}" 2>/dev/null; then
  exec ruff format --check src tests benchmarks
fi
mapfile -t files < <(git diff --name-only --diff-filter=ACMR "$base" HEAD -- '*.py')
if [[ ${#files[@]} -eq 0 ]]; then
  echo "no Python file changed"
  exit 0
fi
ruff format --check "${files[@]}"
