"""https through the guarded opener against a real TLS server on 127.0.0.1 (a self-signed
certificate made here): the download works, the deadline bounds a trickling TLS server too, and
the default trust store refuses a certificate it does not know."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grit_pipeline.fetch import AddressPolicy, FetchConfig, FetchError, download
from grit_pipeline.fetch.guard import Opener
from grit_pipeline.testing import jpeg_bytes

x509 = pytest.importorskip("cryptography.x509")  # only to make the certificate
IMAGE = jpeg_bytes(40, 30)
POLICY = AddressPolicy(allowed_networks=("127.0.0.1/32",))
TRICKLE_BYTES = 80  # one every 0.25 s: 20 s, twenty times the deadline under test
REQUESTS_S: list[float] = []  # when each request reached the server


def self_signed(directory) -> tuple[str, str]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        trickle = self.path == "/trickle"
        REQUESTS_S.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", str(TRICKLE_BYTES) if trickle else str(len(IMAGE)))
        self.end_headers()
        if not trickle:
            self.wfile.write(IMAGE)
            return
        for _ in range(TRICKLE_BYTES):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.25)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", ssl.create_default_context(cafile=cert)
    server.shutdown()
    server.server_close()


def test_https_download_through_the_guarded_opener(tls_server):
    base, trusted = tls_server
    assert download(f"{base}/a.jpg", FetchConfig(timeout_s=5), Opener(POLICY, tls=trusted)) == IMAGE


def test_deadline_bounds_a_trickling_tls_server(tls_server):
    base, trusted = tls_server
    with pytest.raises(FetchError) as info:
        download(f"{base}/trickle", FetchConfig(timeout_s=1.0), Opener(POLICY, tls=trusted))
    assert info.value.failure.reason == "timeout"
    # Half the trickle, from the request (the first download imports img2dataset, seconds when
    # loaded): the 1 s deadline ended it, not the last byte (a bound a loaded machine keeps).
    assert time.monotonic() - REQUESTS_S[-1] < TRICKLE_BYTES * 0.25 / 2


def test_unknown_certificate_is_a_connection_error(tls_server):
    base, _ = tls_server
    with pytest.raises(FetchError) as info:
        download(f"{base}/a.jpg", FetchConfig(timeout_s=5), Opener(POLICY))
    assert info.value.failure.reason == "connection_error"
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.failure.error
