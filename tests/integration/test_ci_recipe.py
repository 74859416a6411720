"""examples/ci/github-actions.yml: every `run:` step, in order, as a main-branch job would run it.

The steps run with bash on a copy of the example project, with Debian's docker-registry on
127.0.0.1 as $REGISTRY and this venv's tritonkit on PATH. What GitHub provides (`uses:` steps)
and the pip install (this venv has tritonkit) are left out. The job runs twice: the first push
releases v1, the second (after a change to the spec) diffs against v1 and releases v2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import ROOT, copy_example

RECIPE = ROOT / "examples" / "ci" / "github-actions.yml"


def _steps() -> list[dict]:
    workflow = yaml.safe_load(RECIPE.read_text())
    (job,) = workflow["jobs"].values()
    return [step for step in job["steps"] if "run" in step and not step["run"].startswith("pip install")]


def _job(workspace: Path, env: dict[str, str]) -> None:
    for step in _steps():
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", step["run"]],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"step '{step['name']}' failed:\n{done.stdout}\n{done.stderr}"


def test_the_recipe_builds_verifies_diffs_releases_and_publishes(registry: tuple[str, Path], tmp_path: Path) -> None:
    assert {s["name"] for s in _steps()} == {
        "Build",
        "Verify (hashes, configs, then every model loaded on Triton and sent one request)",
        "Diff against the last release", "Release", "Publish by digest",
    }  # fmt: skip
    workspace = tmp_path / "repo"
    copy_example(workspace / "model_repository")
    if not (workspace / "ensembles").exists():
        shutil.copytree(ROOT / "ensembles", workspace / "ensembles")
    host, _ = registry
    env = dict(os.environ)
    env.update(
        SPEC="model_repository/tritonkit.yaml",
        TRITONKIT_STORE=str(workspace / ".tritonkit-releases"),
        REGISTRY=f"{host}/ci/demo",
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    env.pop("TRITONKIT_REGISTRY_USERNAME", None)
    env.pop("TRITONKIT_REGISTRY_PASSWORD", None)

    _job(workspace, env)
    assert (workspace / "diff.txt").read_text().startswith("no release yet")
    loaded = json.loads((workspace / "verify.json").read_text())["load"]
    assert {m["model"] for m in loaded if m["loaded"]} == {"classifier", "postprocess", "classify"}
    first = json.loads((workspace / "publish.json").read_text())
    assert first["release"] == "v1" and first["reference"].startswith(f"oci://{host}/ci/demo@sha256:")

    spec = workspace / "model_repository" / "tritonkit.yaml"
    spec.write_text(spec.read_text().replace("max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 700"))
    _job(workspace, env)
    diff = (workspace / "diff.txt").read_text()
    removed = [line for line in diff.splitlines() if line.startswith("-") and "max_queue_delay" in line]
    added = [line for line in diff.splitlines() if line.startswith("+") and "max_queue_delay" in line]
    assert "classifier" in diff and "2000" in removed[0] and "700" in added[0], diff
    second = json.loads((workspace / "publish.json").read_text())
    assert second["release"] == "v2" and second["reference"] != first["reference"]
    assert (tmp_path / "summary.md").read_text().count("published oci://") == 2
