"""Reloading a model with a config override on a running server (what `tune` and local
promotion build on): no restart, and a failed reload leaves the serving version in place."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

from tritonkit import BuildResult, Endpoints, ServerError, TritonServer


def _config(server: TritonServer, model: str) -> dict:
    with urllib.request.urlopen(f"{server.endpoints.http_url}/v2/models/{model}/config", timeout=5) as response:
        return json.loads(response.read())


def test_config_override_reloads_without_restart_and_bad_override_keeps_serving(demo_build: BuildResult) -> None:
    endpoints = Endpoints.allocate()
    server = TritonServer(demo_build.path, endpoints=endpoints, models=["classifier"])  # the one it reloads
    server.start()
    try:
        pid = server.pid
        config = _config(server, "classifier")
        config["instance_group"] = [{"count": 2, "kind": "KIND_CPU"}]
        config["dynamic_batching"]["max_queue_delay_microseconds"] = 500
        server.models_api.load("classifier", json.dumps(config))
        reloaded = _config(server, "classifier")
        assert reloaded["instance_group"][0]["count"] == 2
        assert reloaded["dynamic_batching"]["max_queue_delay_microseconds"] == 500
        assert server.pid == pid

        broken = dict(reloaded, max_batch_size=4, dynamic_batching={"preferred_batch_size": [64]})
        with pytest.raises(ServerError, match="model 'classifier' failed to load"):
            server.models_api.load("classifier", json.dumps(broken))
        assert server.models_api.ready(server.models) and server.pid == pid
        client = httpclient.InferenceServerClient(server.endpoints.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([[2.0, 0.0, 0.0, 1.0]], dtype=np.float32))
        assert int(client.infer("classifier", [tensor]).as_numpy("logits").argmax()) == 0
        assert _config(server, "classifier")["instance_group"][0]["count"] == 2  # the good config still serves
    finally:
        server.stop()
