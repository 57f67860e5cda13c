#!/bin/sh
# Prints a .env for compose.yaml with fresh random secrets: sh gen-env.sh > .env && chmod 600 .env
# Non-secret values are copied from .env.example; the webhook URL still needs to be set by hand.
set -eu
here=$(dirname "$0")
rand() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
while IFS= read -r line; do
  case "$line" in
    ALERTMANAGER_WEBHOOK_URL=*|\#*|'') printf '%s\n' "$line" ;;
    MINIO_ROOT_USER=*) printf 'MINIO_ROOT_USER=minio-admin\n' ;;
    MLFLOW_S3_ACCESS_KEY_ID=*) printf 'MLFLOW_S3_ACCESS_KEY_ID=mlflow-%s\n' "$(rand | cut -c1-12)" ;;
    LOOPML_API_KEYS=*) printf 'LOOPML_API_KEYS=%s,%s:predict+feedback\n' "$(rand)" "$(rand)" ;;
    *=replace-me*) printf '%s=%s\n' "${line%%=*}" "$(rand)" ;;
    *) printf '%s\n' "$line" ;;
  esac
done < "$here/.env.example"
