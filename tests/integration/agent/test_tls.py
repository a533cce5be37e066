"""TLS by default: a platform certificate from a throwaway CA is trusted only through BERTH_CA_FILE;
a wrong CA is refused with a clear error and never downgraded to plaintext."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakeplatform import PlatformServer, agent_settings, eventually, running_agent

from berth.runtimes.memory import MemoryRuntime


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_trusted_ca_connects_over_tls(tmp_path: Path) -> None:
    ca_key, ca = make_ca("berth test CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(_pem(ca))
    async with PlatformServer(tls=make_server_cert(ca_key, ca)) as server:
        token = server.platform.issue_connection_token()
        assert server.platform.iss.startswith("localhost:")
        settings = agent_settings(tmp_path / "d", token, allow_plaintext=False, ca_file=ca_file)
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await server.platform.wait_accepted(within_s=10)
            await running.agent.health.wait_accepted()


async def test_wrong_ca_is_refused_clearly_without_downgrade(tmp_path: Path) -> None:
    ca_key, ca = make_ca("the platform's CA")
    _, other = make_ca("some other CA")
    ca_file = tmp_path / "other.pem"
    ca_file.write_bytes(_pem(other))
    async with PlatformServer(tls=make_server_cert(ca_key, ca)) as server:
        token = server.platform.issue_connection_token()
        settings = agent_settings(tmp_path / "d", token, allow_plaintext=False, ca_file=ca_file)
        with structlog.testing.capture_logs() as logs:
            async with running_agent(settings, runtime=MemoryRuntime()) as running:
                await eventually(
                    lambda: [e for e in logs if e["event"] == "platform_tls_failed"], within_s=10
                )
                assert server.platform.connects == []
                assert not running.agent.health.accepted
        failure = next(e for e in logs if e["event"] == "platform_tls_failed")
        assert failure["log_level"] == "error"
        assert "BERTH_CA_FILE" in failure["hint"]
        assert not [e for e in logs if e["event"] == "platform_plaintext"]
