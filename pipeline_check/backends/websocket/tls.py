"""TLS for the feed (``wss://``): a certificate authority and server certificate made for the run, or the
user's own certificate and key.

``generate`` uses ``cryptography`` (PyCA) directly: pipeline-check ships this path to users, and PyCA's
X.509 builder is the maintained primitive that test-only helpers such as ``trustme`` wrap. The CA
certificate is written where the ingestor can be pointed at it (``SSL_CERT_FILE``, a trust-store
setting); the private keys never leave ``folder`` and are readable by the owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline_check.core.errors import ConfigError

SETTING = "source.tls"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
# the validity starts a day early so a client whose clock is behind still accepts it
CLOCK_SLACK = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of the feed's certificate (chain), its key and, when generated, the CA that signed it."""

    cert: Path
    key: Path
    ca: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # an empty password makes an encrypted key fail to load instead of prompting on the terminal
        context.load_cert_chain(self.cert, self.key, password=b"")
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts ``ca`` (the system's CAs when there is none)."""
        return ssl.create_default_context(cafile=self.ca)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: quick to generate on a busy 2-core machine, accepted by every TLS client
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    """Write through a temporary file and a rename: an ingestor re-reading the CA file while a new run
    writes it sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # a key is created owner-only from the start, never chmod-ed after being readable
    tmp.unlink(missing_ok=True)  # a leftover would keep its own mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate(
    folder: Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, valid_for: dt.timedelta = dt.timedelta(days=7)
) -> TlsFiles:
    """Make a CA and a server certificate for ``hosts`` (IP addresses or DNS names) in ``folder``:
    ``feed-ca.pem`` (give it to the ingestor), ``feed-cert.pem`` and ``feed-key.pem``."""
    if not hosts:
        raise ConfigError(f"{SETTING}.hosts", [], "names no host", "list the addresses the ingestor dials")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{SETTING}.folder", str(folder), f"cannot be created ({exc.strerror})", "choose a writable folder"
        ) from None
    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipeline-check feed CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SLACK)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SLACK)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return TlsFiles(
        cert=_write(folder / "feed-cert.pem", server.public_bytes(pem)),
        key=_write(folder / "feed-key.pem", key_pem, private=True),
        ca=_write(folder / "feed-ca.pem", ca.public_bytes(pem)),
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def load(cert: str | Path, key: str | Path, ca: str | Path | None = None) -> TlsFiles:
    """The user's certificate (chain) and key, checked to load and to belong together."""
    files = TlsFiles(Path(cert), Path(key), Path(ca) if ca is not None else None)
    for name, path in (("cert", files.cert), ("key", files.key), ("ca", files.ca)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{SETTING}.{name}", str(path), "no such file", "give the path of a PEM file")
    try:
        files.server_context()
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{SETTING}.key",
            str(files.key),
            f"does not load with {files.cert} ({exc.reason or exc})",
            "give the PEM certificate chain and the unencrypted PEM private key that belong to it",
        ) from None
    if files.ca is not None:
        try:
            files.client_context()
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{SETTING}.ca", str(files.ca), f"is not a PEM CA certificate ({exc.reason or exc})", "give a PEM file"
            ) from None
    return files
