#!/usr/bin/env bash
# Backs up the one-host stack into one tarball: both PostgreSQL databases (pg_dump, custom format:
# mlflow = runs and model registry, loopml = routing state, predictions, feedback, audit log) and
# the artifact bucket (models, data splits, reports), copied by bucket.py inside the loopml image.
#
#   cd deploy/compose && ./backup.sh [OUT_DIR]     # writes OUT_DIR/loopml-backup-<UTC time>.tar.gz
#
# The stack keeps serving while it runs. The dumps are each consistent; the bucket is copied after
# them, so every model version the dumps name has its artifacts (a run started meanwhile may be
# partly in the bucket, never in the dumps). COMPOSE is the compose command with its project
# options, e.g. COMPOSE="docker-compose -p loopml" (default: docker compose). Restore: restore.sh.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-.}"
read -r -a compose <<< "${COMPOSE:-docker compose}"
bucket="${ARTIFACT_BUCKET:-mlflow-artifacts}"

work="$(mktemp -d "${TMPDIR:-/tmp}/loopml-backup.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
name="loopml-backup-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -m 0755 "$work/$name" "$work/$name/bucket"

for db in mlflow loopml; do
    "${compose[@]}" exec -T postgres pg_dump -U postgres --format=custom --no-owner "$db" \
        > "$work/$name/$db.dump"
    echo "database $db: $(wc -c < "$work/$name/$db.dump") bytes"
done

# bucket.py runs in the mlflow service's container (the loopml image carries boto3), with its S3
# endpoint and keys, as this user so the copies are ours.
"${compose[@]}" run --rm --no-deps -T --user "$(id -u):$(id -g)" \
    -v "$here/bucket.py:/opt/bucket.py:ro" -v "$work/$name/bucket:/backup" \
    --entrypoint python3 mlflow /opt/bucket.py download "$bucket" /backup

printf 'created=%s\nbucket=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$bucket" > "$work/$name/MANIFEST"
mkdir -p "$out"
tar -C "$work" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
