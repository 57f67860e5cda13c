"""Copies the artifact bucket to or from a directory, for backup.sh and restore.sh.

    python3 bucket.py download|upload BUCKET DIR

Runs in the mlflow service's container: boto3 (the loopml image's s3 extra), the endpoint
(MLFLOW_S3_ENDPOINT_URL) and keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) are the ones MLflow
uses. Object keys map to relative paths below DIR.
"""

import os
import sys
from pathlib import Path

import boto3


def main(action: str, bucket: str, directory: str) -> int:
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    root = Path(directory)
    count = 0
    if action == "download":
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                target = root / obj["Key"]
                if root.resolve() not in target.resolve().parents:
                    raise SystemExit(f"unsafe object key {obj['Key']!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                count += 1
    elif action == "upload":
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, path.relative_to(root).as_posix())
            count += 1
    else:
        raise SystemExit(f"unknown action {action!r}: download or upload")
    print(f"{action}: {count} objects, bucket {bucket}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    sys.exit(main(*sys.argv[1:]))
