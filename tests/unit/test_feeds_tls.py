"""Certificates made for a run, and the user's own certificate checked before serving."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from pipeline_check.backends.websocket import tls
from pipeline_check.core.errors import ConfigError


def test_generated_ca_signs_a_server_cert_for_the_hosts(tmp_path: Path):
    files = tls.generate(tmp_path / "certs", ("127.0.0.1", "localhost"))
    assert files.ca is not None
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


def test_generated_key_is_readable_by_the_owner_only(tmp_path: Path):
    files = tls.generate(tmp_path)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    files.server_context()  # cert and key belong together


def test_user_files_are_loaded_and_returned(tmp_path: Path):
    made = tls.generate(tmp_path)
    loaded = tls.load(str(made.cert), str(made.key), str(made.ca))
    assert (loaded.cert, loaded.key, loaded.ca) == (made.cert, made.key, made.ca)


def test_a_missing_file_names_the_setting(tmp_path: Path):
    made = tls.generate(tmp_path)
    with pytest.raises(ConfigError) as error:
        tls.load(tmp_path / "nope.pem", made.key)
    assert str(error.value).startswith("source.tls.cert=")
    assert "no such file" in str(error.value) and "\n" not in str(error.value)


def test_a_key_of_another_cert_is_refused_in_one_line(tmp_path: Path):
    first, second = tls.generate(tmp_path / "a"), tls.generate(tmp_path / "b")
    with pytest.raises(ConfigError) as error:
        tls.load(first.cert, second.key)
    message = str(error.value)
    assert message.startswith("source.tls.key=") and "does not load with" in message and "\n" not in message


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path: Path):
    made = tls.generate(tmp_path)
    with pytest.raises(ConfigError, match=r"^source\.tls\.ca="):
        tls.load(made.cert, made.key, made.key)
