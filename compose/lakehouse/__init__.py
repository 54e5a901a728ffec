"""The lakehouse profile's infrastructure: S3 (moto) and an Iceberg REST catalog whose warehouse is on it.

Run from compose/ like the reference services: ``python -m lakehouse.s3`` and ``python -m lakehouse.catalog``.
This module holds the defaults both share.
"""

DEFAULT_BUCKET = "lakehouse"
# moto checks no signature: any key pair signs requests to it, these are the ones the profile uses
ACCESS_KEY_ID = "lakehouse"
SECRET_ACCESS_KEY = "lakehouse-secret"
REGION = "us-east-1"
