#!/bin/sh
# One-shot MinIO set-up (the minio-init service): the artifact bucket, private, and an MLflow user
# whose policy reaches that bucket only. Safe to run again.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$ARTIFACT_BUCKET"
mc anonymous set none "local/$ARTIFACT_BUCKET"
mc admin policy create local mlflow-artifacts /init/mlflow-policy.json
mc admin user add local "$MLFLOW_S3_ACCESS_KEY_ID" "$MLFLOW_S3_SECRET_ACCESS_KEY"
# Fails when the policy is attached already (a second run): that is the state we want.
mc admin policy attach local mlflow-artifacts --user "$MLFLOW_S3_ACCESS_KEY_ID" || true
echo "bucket $ARTIFACT_BUCKET and user $MLFLOW_S3_ACCESS_KEY_ID ready"
