"""Where a Triton server listens: its address and three ports, chosen together.

A server needs three distinct ports (HTTP, gRPC, metrics). Probing for a free port three times,
one after the other, lets the kernel hand the same port back twice (each probe's socket is
closed before the next asks), and Triton then refuses to start ("cannot listen to GRPC requests
and metrics requests at the same address and port"). :meth:`Endpoints.allocate` therefore
binds all three sockets first, reads their ports, and only then releases them: three distinct
ports, each free a moment ago. Between that moment and Triton's own bind another process can
still take one (a bind race); a server started on allocated endpoints retries with fresh ones
(:class:`~tritonkit.serve.server.TritonServer`), while endpoints a user chose are never changed.

Example:
    >>> endpoints = Endpoints.allocate()
    >>> len({endpoints.http_port, endpoints.grpc_port, endpoints.metrics_port})
    3
    >>> Endpoints().http_url
    'http://127.0.0.1:8000'
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

from tritonkit.errors import UsageError


@dataclass(frozen=True)
class Endpoints:
    """Where a running server listens (Triton's own default ports unless given).

    ``allocated`` marks endpoints chosen by :meth:`allocate`: a server may replace them with
    fresh ones when it loses a bind race, never endpoints a user chose.

    Raises:
        UsageError: two of the ports are the same.
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    allocated: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        ports = {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}
        for label, port in ports.items():
            same = [other for other, value in ports.items() if value == port and other != label]
            if same:
                raise UsageError(
                    f"the {label} and {same[0]} ports are both {port}: Triton needs three different ports",
                    hint="choose a different port for each of --http-port, --grpc-port and --metrics-port",
                )

    @classmethod
    def allocate(cls, host: str = "127.0.0.1") -> Endpoints:
        """Three distinct ports that are free on ``host`` right now, chosen together.

        All three sockets stay bound until every port is known, so the kernel cannot hand one
        port out twice.
        """
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(socket.socket()) for _ in range(3)]
            for sock in sockets:
                sock.bind((_bind_host(host), 0))
            http, grpc, metrics = (int(sock.getsockname()[1]) for sock in sockets)
        return cls(host, http, grpc, metrics, allocated=True)

    @property
    def http_url(self) -> str:
        return f"http://{self._host()}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._host()}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._host()}:{self.metrics_port}/metrics"

    def _host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host


def free_port() -> int:
    """One TCP port that is free on 127.0.0.1 right now (for one listener; a server's three
    ports come from :meth:`Endpoints.allocate`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bind_host(host: str) -> str:
    return "" if host in ("0.0.0.0", "") else host
