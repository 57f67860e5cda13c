#!/usr/bin/env bash
# Restores a backup.sh tarball into an EMPTY stack (new volumes, e.g. a new host or after
# `docker compose down -v`): starts PostgreSQL and the object store, refuses databases that already
# hold tables, loads both dumps and the bucket. Then start the rest: docker compose up -d.
#
#   cd deploy/compose && ./restore.sh loopml-backup-<time>.tar.gz
#
# The .env may differ from the backed-up stack's (new passwords): the dumps carry no owners or
# passwords; the init script made the roles, the restored objects belong to them. COMPOSE: as in
# backup.sh.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
archive="${1:?usage: restore.sh BACKUP.tar.gz}"
read -r -a compose <<< "${COMPOSE:-docker compose}"

work="$(mktemp -d "${TMPDIR:-/tmp}/loopml-restore.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
tar -C "$work" -xzf "$archive"
dir="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'loopml-backup-*' | head -n1)"
if [ -z "$dir" ] || [ ! -f "$dir/MANIFEST" ]; then
    echo "not a backup.sh archive: $archive" >&2
    exit 2
fi
bucket="$(sed -n 's/^bucket=//p' "$dir/MANIFEST")"

# The object store's init creates the bucket; PostgreSQL's initdb hook the roles and databases.
"${compose[@]}" up -d postgres minio-init
for _ in $(seq 60); do
    "${compose[@]}" exec -T postgres pg_isready -q -h 127.0.0.1 -U postgres -d loopml && break
    sleep 2
done
"${compose[@]}" exec -T postgres pg_isready -h 127.0.0.1 -U postgres -d loopml

for db in mlflow loopml; do
    tables="$("${compose[@]}" exec -T postgres psql -U postgres -d "$db" -tAc \
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")"
    if [ "${tables//[^0-9]/}" != 0 ]; then
        echo "database $db is not empty ($tables tables): restore into an empty stack" >&2
        exit 1
    fi
    # --role: the restored objects belong to the service's own role, as if it had made them.
    "${compose[@]}" exec -T postgres pg_restore -U postgres --dbname "$db" --role "$db" \
        --no-owner --exit-on-error < "$dir/$db.dump"
    echo "database $db restored"
done

"${compose[@]}" run --rm --no-deps -T --user "$(id -u):$(id -g)" \
    -v "$here/bucket.py:/opt/bucket.py:ro" -v "$dir/bucket:/backup:ro" \
    --entrypoint python3 mlflow /opt/bucket.py upload "$bucket" /backup
echo "restored $archive: now start the stack (docker compose up -d)"
