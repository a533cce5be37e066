"""The platform's own certificate authority and server certificate, created once and persisted.

Install scripts carry the CA so agents verify the platform (§3.1); the server certificate names
the advertised host (DNS name or IP address) plus the loopback names, and is re-issued from the
same CA when the advertised host changes.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from berth.files import write_atomic

CA_VALIDITY_DAYS = 3650
SERVER_VALIDITY_DAYS = 825


@dataclass(frozen=True)
class ServerTls:
    ca_pem: bytes
    cert_chain_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _create_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Berth platform CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
    write_atomic(folder / "ca.key", _key_pem(key))
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _san_entries(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for candidate in (host, "localhost", "127.0.0.1"):
        if candidate in seen:
            continue
        seen.add(candidate)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(candidate)))
        except ValueError:
            names.append(x509.DNSName(candidate))
    return names


def _create_server_cert(
    folder: Path, host: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=SERVER_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san_entries(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(folder / "server.key", _key_pem(key))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.host").write_text(host)


def ensure_server_tls(folder: Path, host: str) -> ServerTls:
    """Loads (or creates) the CA and a server certificate for ``host``. Blocking: call in a thread."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (folder / "ca.pem").is_file() and (folder / "ca.key").is_file():
        ca_cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        loaded = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("ca.key is not an EC private key")
        ca_key = loaded
    else:
        ca_cert, ca_key = _create_ca(folder)
    host_file = folder / "server.host"
    current = host_file.read_text() if host_file.is_file() else ""
    if current != host or not (folder / "server.pem").is_file() or not (folder / "server.key").is_file():
        _create_server_cert(folder, host, ca_cert, ca_key)
    ca_pem = (folder / "ca.pem").read_bytes()
    return ServerTls(
        ca_pem=ca_pem,
        cert_chain_pem=(folder / "server.pem").read_bytes() + ca_pem,
        key_pem=(folder / "server.key").read_bytes(),
    )
