#!/usr/bin/env bash
# Smoke test of a loopml deployment: /readyz answers 200 and one prediction returns a label.
# Usage: smoke.sh BASE_URL   (API key, if the deployment requires one, in LOOPML_SMOKE_API_KEY)
set -euo pipefail
base="${1:?usage: smoke.sh BASE_URL}"
for attempt in $(seq 1 30); do
  if curl -fsS --max-time 5 "$base/readyz" > /dev/null; then
    break
  fi
  if [[ $attempt -eq 30 ]]; then
    echo "smoke: $base/readyz never answered 200" >&2
    exit 1
  fi
  sleep 5
done
headers=(-H "Content-Type: application/json")
if [[ -n "${LOOPML_SMOKE_API_KEY:-}" ]]; then
  headers+=(-H "X-API-Key: $LOOPML_SMOKE_API_KEY")
fi
answer=$(curl -fsS --max-time 10 "${headers[@]}" "$base/v1/predict" \
  -d '{"text": "the flight was on time and the crew was lovely"}')
echo "smoke: $answer"
python3 - "$answer" <<'PY'
import json
import sys

body = json.loads(sys.argv[1])
assert body["predictions"][0]["label"], f"no label in the answer: {body}"
print(f"smoke: {body['model_name']} v{body['model_version']} ({body['variant']}) answered")
PY
