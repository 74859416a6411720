"""What a running Triton serves, apart from its process: models loaded, ready, drained.

The split PyTriton makes between its ``TritonServer`` (the process) and ``ModelManager`` (the
models on it): :class:`~tritonkit.serve.server.TritonServer` starts, watches and stops a
``tritonserver``; a :class:`ModelManager` talks to a live one through its HTTP endpoint — loads
through the repository API (:mod:`.repository_api`, the one load/unload call), readiness, and a
drain before stopping. It needs only an address, so it works the same on a server tritonkit did
not start.

Example:
    >>> models = ModelManager(Endpoints(), Path("dist/demo"))
    >>> models.load("classifier")
    >>> models.ready(["classifier"])
    True
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tritonkit.serve.endpoints import Endpoints
from tritonkit.serve.repository_api import load_model, unload_model

BUSY = ("READY", "LOADING", "UNLOADING")
"""States of a model that may still answer, or be answering."""


def ensemble_names(repository: Path) -> list[str]:
    """The models of ``repository`` that are ensembles."""
    configs = sorted(repository.glob("*/config.pbtxt"))
    return [p.parent.name for p in configs if 'platform: "ensemble"' in p.read_text(errors="replace")]


def repository_models(repository: Path) -> list[str]:
    """Names of the model directories (those with a config.pbtxt), ensembles after the models they run."""
    configs = sorted(repository.glob("*/config.pbtxt"))
    ensembles = set(ensemble_names(repository))
    return sorted(p.parent.name for p in configs if p.parent.name not in ensembles) + sorted(ensembles)


def http_status(url: str, timeout: float = 5.0) -> int:
    """The HTTP status of a GET on ``url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


class ModelManager:
    """The models of the Triton at ``endpoints`` serving ``repository``.

    ``log_hint`` is added to a failed load's hint (where the server's log is).
    """

    def __init__(self, endpoints: Endpoints, repository: Path, *, log_hint: str = "") -> None:
        self.endpoints = endpoints
        self.repository = repository
        self.log_hint = log_hint

    def _client(self, timeout: float) -> Any:
        import tritonclient.http as httpclient

        address = self.endpoints.http_url.removeprefix("http://")
        return httpclient.InferenceServerClient(address, network_timeout=max(timeout, 1.0))

    def load(self, name: str, config: Mapping[str, Any] | str | None = None) -> None:
        """Load (or reload) a model, optionally with a config override (:mod:`.repository_api`).

        Raises:
            ServerError: with Triton's reason when the load fails.
        """
        client = self._client(300)
        try:
            hint = "fix the model and rebuild" + (f"; {self.log_hint}" if self.log_hint else "")
            load_model(client, name, config, hint=hint)
        finally:
            client.close()

    def ready(self, names: Iterable[str]) -> bool:
        """Server ready and every model of ``names`` ready."""
        base = self.endpoints.http_url
        if http_status(base + "/v2/health/ready") != 200:
            return False
        return all(http_status(f"{base}/v2/models/{name}/ready") == 200 for name in names)

    def drain(self, timeout: float = 30.0, poll: float = 0.2) -> list[str]:
        """Stop taking requests and let the ones in flight finish, before the server stops.

        Every model is unloaded through the repository API, the ensembles first and drained
        before their steps (a request in flight in an ensemble still calls them). Triton refuses
        a new request for an unloading model at once (``404 … has no available versions``, which
        a client or load balancer can retry elsewhere) and unloads it when its last request in
        flight has been answered. Triton's own SIGINT shutdown does not do this: it keeps
        answering new requests until its exit timeout while any is in flight, so under steady
        traffic it never drained and was killed with requests in flight. Waits until no model
        is loaded or unloading, up to ``timeout`` seconds.

        Returns:
            The models still loaded or unloading when ``timeout`` ran out (empty: drained; also
            empty when the server does not answer: nothing left to drain through it).
        """
        client = self._client(timeout)
        deadline = time.monotonic() + timeout

        def busy(names: set[str]) -> list[str]:
            return sorted(m["name"] for m in client.get_model_repository_index() if m["name"] in names and
                          m.get("state") in BUSY)  # fmt: skip

        try:
            loaded = {m["name"] for m in client.get_model_repository_index() if m.get("state") in BUSY}
            ensembles = loaded & set(ensemble_names(self.repository))
            # ensembles first, and drained before their steps are touched: a request in flight in
            # an ensemble still calls its steps
            for names in (ensembles, loaded - ensembles):
                for name in sorted(names):
                    with contextlib.suppress(Exception):  # one that cannot be unloaded is waited on below
                        unload_model(client, name)
                while (left := busy(names)) and time.monotonic() < deadline:
                    time.sleep(poll)
                if left:
                    return sorted(set(left) | (loaded - ensembles))
            return []
        except Exception:  # the server is gone or not answering: nothing left to drain through it
            return []
        finally:
            client.close()
