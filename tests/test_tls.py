"""rediss:// for real: the cache talks TLS, verifying the server against
``tls_ca_file`` and showing its own certificate (``tls_cert_file``,
``tls_key_file``), to a TLS front of the suite's redis-server that requires
both (certificates made for the test by trustme)."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import trustme
from wsgi_apps import Origin, call

from redis_wsgi_cache import CacheMiddleware


class TLSFront:
    """Accepts TLS connections (a client certificate required) on a free port
    and relays each, as bytes, to a plain TCP port, in a thread of its own."""

    def __init__(self, context: ssl.SSLContext, backend: int) -> None:
        self.context = context
        self.backend = backend
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend))
        # Both ways in one thread: an SSL socket read in one thread while
        # written in another may break its state (and the connection).
        try:
            while not self.stop.is_set():
                ready = [client] if client.pending() else []
                if not ready:
                    ready, _, _ = select.select([client, backend], [], [], 0.1)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (backend if source is client else client).sendall(data)
        except OSError:
            pass
        finally:
            for end in (client, backend):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def tls(redis_server, tmp_path) -> Iterator[tuple[TLSFront, dict[str, str]]]:
    authority = trustme.CA()
    server_cert = authority.issue_cert("127.0.0.1", "localhost")
    client_cert = authority.issue_cert("cache@example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    authority.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    files = {
        "tls_ca_file": str(tmp_path / "ca.pem"),
        "tls_cert_file": str(tmp_path / "client.pem"),
        "tls_key_file": str(tmp_path / "client.key"),
    }
    authority.cert_pem.write_to_path(files["tls_ca_file"])
    client_cert.cert_chain_pems[0].write_to_path(files["tls_cert_file"])
    client_cert.private_key_pem.write_to_path(files["tls_key_file"])
    front = TLSFront(context, redis_server.port)
    yield front, files
    front.close()


def test_rediss_with_a_ca_and_a_client_certificate(tls, redis_client):
    front, files = tls
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = CacheMiddleware(
        origin,
        redis_url=f"rediss://127.0.0.1:{front.port}/0",
        socket_timeout=10,
        prefix="tls",
        **files,
    )
    assert call(middleware, "/a")[1]["X-Cache"] == "MISS"
    assert call(middleware, "/a")[1]["X-Cache"] == "HIT"
    assert origin.count == 1
    assert redis_client.keys("tls:{*")  # stored, through TLS
    middleware.close()


def test_a_server_the_ca_does_not_vouch_for_is_refused(tls, tmp_path):
    front, files = tls
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    origin = Origin(headers=[("Cache-Control", "max-age=60")])
    middleware = CacheMiddleware(
        origin,
        redis_url=f"rediss://127.0.0.1:{front.port}/0",
        socket_timeout=10,
        **{**files, "tls_ca_file": str(tmp_path / "other.pem")},
    )
    # The cache fails open: the app answers, nothing is stored over a TLS
    # connection it could not trust.
    for _ in range(2):
        _, headers, _ = call(middleware, "/a")
        assert "redis-unavailable" in headers["Cache-Status"]
    assert origin.count == 2
    middleware.close()
