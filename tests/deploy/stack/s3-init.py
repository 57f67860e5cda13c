"""minio-init's job for the moto stand-in (tests/deploy/stack/compose.override.yaml): the private
artifact bucket, created once (safe to run again)."""

import os

import boto3

s3 = boto3.client(
    "s3",
    endpoint_url="http://minio:9000",
    aws_access_key_id=os.environ["MINIO_ROOT_USER"],
    aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"],
    region_name="us-east-1",
)
bucket = os.environ["ARTIFACT_BUCKET"]
if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
    s3.create_bucket(Bucket=bucket)
print(f"bucket {bucket} ready")
