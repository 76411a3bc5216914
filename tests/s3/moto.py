"""The S3 side of tests/api/recording_upload.rs: moto's S3 server with IAM authentication on.

  python3 tests/s3/moto.py setup ENDPOINT BUCKET   -> {"access_key": ..., "secret_key": ...}
  python3 tests/s3/moto.py get ENDPOINT BUCKET KEY ACCESS SECRET OUT
  python3 tests/s3/moto.py list ENDPOINT BUCKET ACCESS SECRET   -> ["key", ...]

The server runs with INITIAL_NO_AUTH_ACTION_COUNT=4: `setup`'s four calls (an IAM user, its
access key, its policy, the bucket) are the only unauthenticated ones. Every later request,
voxline's included, must carry a valid Signature Version 4 of that user's key, or moto
answers 403 (SignatureDoesNotMatch, InvalidAccessKeyId).
"""
import json
import sys

import boto3
from botocore.config import Config

REGION = "us-east-1"
CFG = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})


def client(service, endpoint, access="unused", secret="unused"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=CFG,
    )


def setup(endpoint, bucket):
    iam = client("iam", endpoint)
    iam.create_user(UserName="voxline")
    key = iam.create_access_key(UserName="voxline")["AccessKey"]
    iam.put_user_policy(
        UserName="voxline",
        PolicyName="recordings",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    client("s3", endpoint).create_bucket(Bucket=bucket)
    print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}))


def get(endpoint, bucket, key, access, secret, out):
    s3 = client("s3", endpoint, access, secret)
    with open(out, "wb") as f:
        f.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def list_keys(endpoint, bucket, access, secret):
    s3 = client("s3", endpoint, access, secret)
    r = s3.list_objects_v2(Bucket=bucket)
    print(json.dumps([o["Key"] for o in r.get("Contents", [])]))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"setup": setup, "get": get, "list": list_keys}[cmd](*args)
