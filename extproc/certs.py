"""``ai-gateway certs``: a CA for the Envoy↔sidecar link and the two certificates it signs.

The CA exists for this link only and its key is never written: nobody can sign another
certificate the sidecar would take for Envoy's. Rotating means writing a new set (``--force``)
and restarting both sides. Keys are EC P-256 (cheap handshakes), written owner-only (0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extproc.config import SidecarTLS

FILES = {
    "ca_file": "ca.pem",
    "cert_file": "sidecar.pem",
    "key_file": "sidecar-key.pem",
    "envoy_cert_file": "envoy.pem",
    "envoy_key_file": "envoy-key.pem",
}
ENVOY_NAME = "envoy"


def tls_config(directory: Path, server_name: str = "sidecar") -> SidecarTLS:
    """The ``sidecar.tls`` section naming the files :func:`write_certs` puts in ``directory``."""
    paths = {key: str(directory / name) for key, name in FILES.items()}
    return SidecarTLS(server_name=server_name, **paths)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _issue(
    subject: str,
    names: list[str],
    usage: x509.ObjectIdentifier,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        # One purpose each: the sidecar's certificate cannot serve as Envoy's, nor the reverse.
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("ai-gateway envoy-sidecar CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    # Written beside and renamed: a reader never sees half a file, and a key never exists
    # with wider permissions than 0600, even for a moment.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_certs(
    directory: Path,
    names: list[str],
    days: int = 825,
    force: bool = False,
    owner: tuple[int, int] | None = None,
) -> bool:
    """Write the set into ``directory``; False if a complete set was there and is kept."""
    paths = {key: directory / name for key, name in FILES.items()}
    if not force and all(p.exists() for p in paths.values()):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca(days)
    sidecar_key, sidecar_cert = _issue(
        names[0], names, ExtendedKeyUsageOID.SERVER_AUTH, ca_key, ca_cert, days
    )
    envoy_key, envoy_cert = _issue(
        ENVOY_NAME, [ENVOY_NAME], ExtendedKeyUsageOID.CLIENT_AUTH, ca_key, ca_cert, days
    )
    _write(paths["ca_file"], _pem(ca_cert), owner)
    _write(paths["cert_file"], _pem(sidecar_cert), owner)
    _write(paths["key_file"], _key_pem(sidecar_key), owner)
    _write(paths["envoy_cert_file"], _pem(envoy_cert), owner)
    _write(paths["envoy_key_file"], _key_pem(envoy_key), owner)
    return True
