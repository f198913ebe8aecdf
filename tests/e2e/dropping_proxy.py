"""A TCP proxy on a loopback port in front of a live server, for client retry tests.

`drop_responses = n`: the next n answers are read from the server and thrown away and the
client's connection is closed; the request had its effect, the caller saw a dropped connection
(what a crash of a load balancer or a network cut between answer and client looks like).
`refuse_with_503 = n`: the next n requests are answered 503 without reaching the server.
`stall_responses = n`: the next n answers are held for `stall_s` and then dropped (the caller's
timeout fires first).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.support import free_port

UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 0\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
UNAVAILABLE_BODY = (
    b'{"error": {"code": "service_unavailable", "message": "the proxy says: not now"}}'
)


class DroppingProxy:
    def __init__(
        self,
        upstream_port: int,
        drop_responses: int = 0,
        refuse_with_503: int = 0,
        stall_responses: int = 0,
        stall_s: float = 5.0,
    ) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.drop_responses = drop_responses
        self.refuse_with_503 = refuse_with_503
        self.stall_responses = stall_responses
        self.stall_s = stall_s
        self.stalled = 0
        self.dropped = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._closed = False

    def start(self) -> DroppingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            _close(sock)

    def _take(self, what: str) -> bool:
        with self._lock:
            if getattr(self, what) > 0:
                setattr(self, what, getattr(self, what) - 1)
                return True
            return False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            _close(client)
            return
        self._sockets.append(upstream)
        threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
        self._answers(upstream, client)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if self._take("refuse_with_503"):
                    with self._lock:
                        self.refused += 1
                    client.sendall(UNAVAILABLE % (len(UNAVAILABLE_BODY), UNAVAILABLE_BODY))
                    break  # the request never reaches the server
                upstream.sendall(chunk)
        _close(client)
        _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                if self._take("drop_responses"):
                    with self._lock:
                        self.dropped += 1
                    break  # the answer is lost: close both sides
                if self._take("stall_responses"):
                    with self._lock:
                        self.stalled += 1
                    time.sleep(self.stall_s)
                    break
                client.sendall(chunk)
        _close(client)
        _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
