"""A minimal kubelet log endpoint for the API server to proxy to (there is no real kubelet here).

The API server serves ``pods/log`` by calling ``https://<node address>:<kubelet port>/containerLogs/
<ns>/<pod>/<container>`` on the pod's node; this server answers that with lines a test writes.
"""

from __future__ import annotations

import datetime
import ssl
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kubelet")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "kubelet.crt", folder / "kubelet.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class FakeKubelet:
    def __init__(self, folder: Path) -> None:
        self.lines: dict[str, list[str]] = defaultdict(list)  # pod name -> lines (without timestamp)
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self._cond = threading.Condition()
        self._closed = False
        kubelet = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.split("/")  # /containerLogs/<ns>/<pod>/<container>
                query = parse_qs(url.query)
                if len(parts) != 5 or parts[1] != "containerLogs":
                    self.send_error(404)
                    return
                pod = parts[3]
                kubelet.requests.append((pod, query))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                follow = query.get("follow") == ["true"]
                tail = int(query.get("tailLines", ["-1"])[0])
                with kubelet._cond:
                    sent = len(kubelet.lines[pod]) if tail < 0 else max(0, len(kubelet.lines[pod]) - tail)
                    if tail < 0:
                        sent = 0
                try:
                    while True:
                        with kubelet._cond:
                            pending = kubelet.lines[pod][sent:]
                            sent += len(pending)
                        for line in pending:
                            self.wfile.write(f"{line}\n".encode())
                        self.wfile.flush()
                        if not follow:
                            return
                        with kubelet._cond:
                            if kubelet._closed or pod in kubelet.ended:
                                return
                            kubelet._cond.wait(0.2)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    return

        self.ended: set[str] = set()
        cert, key = _self_signed(folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kubelet", daemon=True)
        self._thread.start()

    def write(self, pod: str, text: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._cond:
            self.lines[pod].append(f"{stamp} {text}")
            self._cond.notify_all()

    def end(self, pod: str) -> None:
        with self._cond:
            self.ended.add(pod)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        time.sleep(0)
