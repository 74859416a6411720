"""A server's three ports are chosen together and never equal; Triton's exit is explained by the
line that says why (serve/endpoints.py, serve/server.py: exit_reason)."""

from __future__ import annotations

import pytest

from tritonkit.errors import UsageError
from tritonkit.serve.endpoints import Endpoints
from tritonkit.serve.server import exit_reason


def test_allocated_ports_are_distinct_every_time() -> None:
    for _ in range(200):
        e = Endpoints.allocate()
        assert len({e.http_port, e.grpc_port, e.metrics_port}) == 3 and e.allocated
    assert not Endpoints().allocated


def test_equal_ports_are_refused_before_triton_is_started() -> None:
    with pytest.raises(UsageError, match="the gRPC and metrics ports are both 9001"):
        Endpoints("127.0.0.1", 9000, 9001, 9001)
    with pytest.raises(UsageError, match="HTTP and gRPC ports are both 8000"):
        Endpoints("127.0.0.1", 8000, 8000, 8002)


# Triton 2.51's own output (trimmed): a flag combination it refuses prints its whole --help text
# first, whose lines mention "error" many times; the reason is the line after it.
_USAGE = """Usage: tritonserver [options]
  --help
\tPrint usage
Logging:
  --log-error <boolean>
\tEnable/disable error-level logging.
  --exit-on-error <boolean>
\tExit the inference server if an error occurs during
\tinitialization.
  --trace-config <string>
\tDefault is 0.

"""


def test_the_reason_after_the_help_text_is_named_not_the_help_text() -> None:
    reason = "The server cannot listen to GRPC requests and metrics requests at the same address and port 0.0.0.0:1"
    log = _USAGE + reason + "\n"
    assert exit_reason(log).startswith("The server cannot listen to GRPC requests and metrics requests")


def test_a_bind_failure_is_named_over_grpc_noise() -> None:
    log = (
        "I1206 13:07:03.98 9051 server.cc:674] some table\n"
        "E1206 13:07:03.985971813    9051 chttp2_server.cc:1060]          UNKNOWN:No address added out of total 1 "
        "resolved for '127.0.0.1:55120' {children:[UNKNOWN:Address already in use {errno:98}]}\n"
        'E1206 13:07:03.989747 9051 main.cc:245] "failed to start GRPC service: Unavailable - Socket '
        "'127.0.0.1:55120' already in use \"\n"
    )
    assert exit_reason(log).startswith("failed to start GRPC service: Unavailable - Socket '127.0.0.1:55120' already")


def test_a_bad_flag_before_the_usage_text_and_the_fallbacks() -> None:
    log = "/opt/tritonserver/bin/tritonserver: unrecognized option '--no-such-flag=1'\n" + _USAGE
    assert exit_reason(log) == "unrecognized option '--no-such-flag=1'"
    assert exit_reason("") == "no output"
    assert exit_reason("W1206 1:2:3.4 1 a.cc:1] warn\nE1206 1:2:3.4 1 b.cc:2] boom\nlast\n") == "boom"
