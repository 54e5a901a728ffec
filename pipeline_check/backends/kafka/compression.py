"""Compressed record batches: every codec Kafka offers (gzip, snappy, lz4, zstd) read by the probes, the sampler
and the record reader, and written by the Kafka injector (``source.compression``).

aiokafka decompresses through ``cramjam`` (a dependency of pipeline-check; gzip is in the standard library). A batch
in a codec this install cannot decompress is a one-line :class:`ConfigError` naming the stage's topic setting and
the fix (exit 2), never an internal error: :func:`decoding` wraps every fetch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from aiokafka.errors import UnsupportedCodecError

from pipeline_check.core.errors import ConfigError

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
FIX = "install cramjam (`pip install cramjam`, a dependency of pipeline-check: reinstall pipeline-check)"


def codec_error(setting: str, topic: str, exc: UnsupportedCodecError) -> ConfigError:
    """The one-line error for a batch of ``topic`` this install cannot decompress."""
    return ConfigError(setting, topic, f"holds record batches this install cannot decompress ({exc})", FIX)


@contextmanager
def decoding(setting: str, topic: str) -> Iterator[None]:
    """Around a fetch of ``topic``: a batch in a codec without its library becomes :func:`codec_error`."""
    try:
        yield
    except UnsupportedCodecError as exc:
        raise codec_error(setting, topic, exc) from None


def producer_codec(compression: Compression, setting: str) -> str | None:
    """The producer's ``compression_type`` for ``compression``; :class:`ConfigError` when its library is missing
    (aiokafka would raise at the producer's construction)."""
    if compression == "none":
        return None
    from aiokafka import codec

    available = {"gzip": codec.has_gzip, "snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd}
    if not available[compression]():
        raise ConfigError(setting, compression, f"this install cannot compress {compression}", FIX)
    return compression
