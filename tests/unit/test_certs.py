"""``ai-gateway certs``: one CA for the link, a server-only and a client-only certificate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from extproc.certs import FILES, tls_config, write_certs


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_set_signed_by_its_own_ca_one_purpose_each(tmp_path: Path) -> None:
    assert write_certs(tmp_path, ["sidecar", "127.0.0.1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES.values())
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    ca = _cert(tmp_path / "ca.pem")
    sidecar, envoy = _cert(tmp_path / "sidecar.pem"), _cert(tmp_path / "envoy.pem")
    for cert in (sidecar, envoy):
        cert.verify_directly_issued_by(ca)
    usage = {
        name: list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        for name, cert in (("sidecar", sidecar), ("envoy", envoy))
    }
    assert usage == {
        "sidecar": [ExtendedKeyUsageOID.SERVER_AUTH],
        "envoy": [ExtendedKeyUsageOID.CLIENT_AUTH],
    }
    san = sidecar.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["sidecar"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # No CA key anywhere: nobody can sign another certificate the sidecar would accept.
    keys = [p.name for p in tmp_path.iterdir() if b"PRIVATE KEY" in p.read_bytes()]
    assert sorted(keys) == ["envoy-key.pem", "sidecar-key.pem"]


def test_an_existing_set_is_kept_unless_forced(tmp_path: Path) -> None:
    assert write_certs(tmp_path, ["sidecar"])
    before = (tmp_path / "ca.pem").read_bytes()
    assert not write_certs(tmp_path, ["sidecar"])
    assert (tmp_path / "ca.pem").read_bytes() == before
    assert write_certs(tmp_path, ["sidecar"], force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_cli_prints_the_config_section(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "certs", "-o", str(tmp_path), "--owner", str(os.getuid())],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    expected = tls_config(tmp_path).model_dump()
    for key, value in expected.items():
        assert f"    {key}: {value}\n" in result.stdout
