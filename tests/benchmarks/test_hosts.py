"""The `hosts` benchmark's parts that need no namespace: its forwarder, and how it says it cannot run."""

import socket
import subprocess
import sys
import threading

import pytest

from benchmarks.namespaces import FORWARDER, Hosts, Unavailable
from scripts.servers import free_port


def echo_server() -> tuple[socket.socket, int]:
    """Listen on 127.0.0.1 and send back whatever each connection sends, until it closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def receive(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {len(received)} of {size} bytes"
        received += chunk
    return received


def test_the_forwarder_passes_every_byte_both_ways_those_sent_at_once_included():
    server, target = echo_server()
    listen = free_port()
    forwarder = subprocess.Popen(
        [sys.executable, str(FORWARDER), f"127.0.0.1:{listen}=127.0.0.1:{target}"], stdout=subprocess.PIPE
    )
    try:
        assert forwarder.stdout is not None
        assert forwarder.stdout.readline().strip() == b"ready"
        payload = bytes(range(256)) * 4000  # a megabyte: more than the buffers hold, so flow control works
        with socket.create_connection(("127.0.0.1", listen), timeout=30) as client:
            # Sent before the forwarder's own connection is made: it must keep it until then.
            sender = threading.Thread(target=client.sendall, args=(payload,))
            sender.start()
            assert receive(client, len(payload)) == payload
            sender.join()
            client.sendall(b"PING\r\n")
            assert receive(client, 6) == b"PING\r\n"
    finally:
        forwarder.terminate()
        forwarder.wait(10)
        server.close()
    assert forwarder.returncode == 0


def test_without_root_the_hosts_cannot_be_made_and_say_why(monkeypatch, tmp_path):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(Unavailable, match="need root"), Hosts(2, [], tmp_path):
        pass
