"""S3 for the lakehouse: moto's S3 API on S3_HOST:S3_PORT, with the warehouse bucket created at start.

Run from compose/: ``python -m lakehouse.s3``. Env: S3_PORT (required), S3_HOST (127.0.0.1),
S3_BUCKET (lakehouse). Healthy once :func:`health_url` answers 200, i.e. the bucket exists.
moto keeps every object in memory: a restart starts with an empty bucket.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from services.common import ConfigError, ServiceError, env_port, env_str, load_config, setup_logging
from werkzeug.serving import make_server

from . import ACCESS_KEY_ID, DEFAULT_BUCKET, REGION, SECRET_ACCESS_KEY

log = logging.getLogger("s3")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Config:
    host: str
    port: int
    bucket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Config:
        bucket = env_str("S3_BUCKET", DEFAULT_BUCKET, env)
        if not _BUCKET_RE.match(bucket):
            raise ConfigError(f"S3_BUCKET={bucket!r} (env): must be an S3 bucket name (3-63 of a-z 0-9 . -)")
        return cls(host=env_str("S3_HOST", "127.0.0.1", env), port=env_port("S3_PORT", env=env), bucket=bucket)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


def health_url(endpoint: str, bucket: str) -> str:
    """GetBucketLocation: 200 once the bucket exists, 404 before (and cheap at any bucket size)."""
    return f"{endpoint}/{bucket}?location"


def create_bucket(endpoint: str, bucket: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    client.create_bucket(Bucket=bucket)


def listen(cfg: S3Config) -> socket.socket:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"S3_PORT={cfg.port}: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}; pick a free port"
        ) from None
    return sock


def serve(cfg: S3Config) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # Bind here: moto's ThreadedMotoServer waits forever when its port is taken, and werkzeug's own
    # bind prints two lines and exits.
    with listen(cfg) as sock:
        server = make_server(
            cfg.host,
            cfg.port,
            DomainDispatcherApplication(create_backend_app),
            threaded=True,
            request_handler=MotoRequestHandler,
            fd=sock.fileno(),  # werkzeug serves a duplicate of it
        )
    thread = threading.Thread(target=server.serve_forever, name="s3-http", daemon=True)
    thread.start()
    try:
        create_bucket(cfg.endpoint, cfg.bucket)
        log.info("S3 on %s, bucket %s", cfg.endpoint, cfg.bucket)
        stop.wait()
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    return 0


def main() -> int:
    setup_logging("s3")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per S3 request otherwise
    cfg = load_config(S3Config.from_env)
    try:
        return serve(cfg)
    except ServiceError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
