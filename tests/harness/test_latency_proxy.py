"""The latency proxy of the chaos run's slow-database fault (harness/latency_proxy.py): bytes pass
through unchanged, latency is on only between slow() and fast(), a missing upstream fails the
client at once, and stop() leaves nothing behind. Plain sockets, no Django: about a second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

from harness.latency_proxy import LatencyProxy
from harness.services import free_port


class EchoServer:
    """Answers every chunk with the same bytes; records what reached it and whether the
    proxy closed its side."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                self.received += chunk
                conn.sendall(chunk)
        self.closed_by_peer.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    proxy = LatencyProxy(upstream_host="127.0.0.1", upstream_port=echo.port)
    proxy.start()
    yield proxy
    proxy.stop()


def connect(proxy: LatencyProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    answer = bytearray()
    while len(answer) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "the proxy closed the connection"
        answer += chunk
    return bytes(answer)


def test_bytes_pass_through_unchanged_both_ways(proxy, echo):
    payload = os.urandom(300_000) + bytes(range(256)) * 4  # larger than one chunk, every byte
    with connect(proxy) as sock:
        assert exchange(sock, payload) == payload
        assert exchange(sock, b"\x00") == b"\x00"
    assert bytes(echo.received) == payload + b"\x00"
    assert proxy.stats.delayed_chunks == 0


def test_latency_only_between_slow_and_fast(proxy):
    with connect(proxy) as sock:
        exchange(sock, b"before")
        assert proxy.stats.delayed_chunks == 0

        proxy.slow(0.1, 0.1)
        started = time.monotonic()
        assert exchange(sock, b"slow") == b"slow"
        # Delayed on the way there and on the way back (a lower bound, never flaky).
        assert time.monotonic() - started >= 0.2
        assert proxy.stats.delayed_chunks == 2

        proxy.fast()
        assert exchange(sock, b"after") == b"after"
        assert proxy.stats.delayed_chunks == 2
    with pytest.raises(ValueError):
        proxy.slow(0.2, 0.1)


def test_a_client_closing_closes_the_upstream_side(proxy, echo):
    sock = connect(proxy)
    exchange(sock, b"hello")
    sock.close()
    assert echo.closed_by_peer.wait(10)


def test_an_upstream_that_is_away_fails_the_client_at_once():
    proxy = LatencyProxy(upstream_host="127.0.0.1", upstream_port=free_port())
    proxy.start()
    try:
        with connect(proxy) as sock:
            assert sock.recv(1) == b""  # closed, not left hanging until the client's timeout
        assert proxy.stats.refused == 1
    finally:
        proxy.stop()


def test_connections_beyond_the_bound_are_closed(echo):
    proxy = LatencyProxy(upstream_host="127.0.0.1", upstream_port=echo.port, max_connections=1)
    proxy.start()
    try:
        with connect(proxy) as first:
            assert exchange(first, b"one") == b"one"
            with connect(proxy) as second:
                assert second.recv(1) == b""
            assert exchange(first, b"still") == b"still"
    finally:
        proxy.stop()


def test_stop_closes_every_connection_and_the_port(echo):
    proxy = LatencyProxy(upstream_host="127.0.0.1", upstream_port=echo.port)
    port = proxy.start()
    sock = connect(proxy)
    exchange(sock, b"open")
    proxy.stop()
    assert sock.recv(1) == b""  # the proxy closed its side
    sock.close()
    assert echo.closed_by_peer.wait(10)
    assert not any(t.name == "latency-proxy" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
