"""Rendered KServe objects against the kserve SDK's own models, in the SDK's venv (a subprocess:
the SDK and tritonclient.grpc cannot share a process)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_deploy import intent_documents, llm_documents, staging_documents


def _kserve_check(documents: list[dict]) -> list[dict]:
    python = Path(__file__).parents[2] / ".venv-kserve" / "bin" / "python"
    if not python.exists():
        pytest.skip("the kserve SDK venv is missing ('make test' creates .venv-kserve)")
    checker = Path(__file__).parents[1] / "tools" / "kserve_check.py"
    done = subprocess.run(
        [str(python), str(checker)], input=json.dumps(documents), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_kserve_sdk_models_accept_the_objects() -> None:
    report = _kserve_check(staging_documents())
    assert report == [{"kind": "ServingRuntime", "problems": []}, {"kind": "InferenceService", "problems": []}]
    broken = staging_documents()
    broken[1]["spec"]["predictor"]["model"]["storageURI"] = broken[1]["spec"]["predictor"]["model"].pop("storageUri")
    problems = _kserve_check(broken)[1]["problems"]
    assert problems == ["InferenceService.spec.predictor.model.storageURI: not a field of V1beta1ModelSpec"]


def test_the_kserve_sdk_accepts_the_autoscaling_fields() -> None:
    for documents in (intent_documents("staging"), intent_documents("prod"), llm_documents()):
        report = _kserve_check(documents)
        assert report == [{"kind": "ServingRuntime", "problems": []}, {"kind": "InferenceService", "problems": []}]
