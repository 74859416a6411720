"""Everything rendered for release vN comes from vN's lock (issue 25, defect 5): editing the
spec's SLO or capacity after v1 was released changes nothing ``deploy v1`` writes — KServe
objects, alert rules, dashboard, Helm values — while a new release takes the new intent."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tests.helpers import TINY_SPEC, tiny_project
from tritonkit.cli import main
from tritonkit.release.store import ReleaseStore

INTENT = (
    """    slo: {p99_ms: 50, peak_rps: 100, error_rate: 0.001}
    capacity: {rps: 40, concurrency: 4, p99_ms: 30}
environments:
  - name: staging
    namespace: ml-staging
    mode: RawDeployment
    runtime_image: nvcr.io/nvidia/tritonserver@sha256:"""
    + "0" * 64
    + "\n"
)


def _deploy(spec: Path, out: Path, name: str) -> dict[str, str]:
    args = ["deploy", name, "--env", "staging", "--dry-run", "--out", str(out / "kserve.yaml"), "-f", str(spec)]
    args += ["--observability", str(out), "--helm-values", str(out / "values.yaml")]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


def test_deploy_v1_renders_the_same_after_the_spec_changes(tmp_path: Path) -> None:
    spec = tiny_project(tmp_path / "project")
    spec.write_text(TINY_SPEC + INTENT)
    runner = CliRunner()
    for step in (["build", "-f", str(spec)], ["release", "-f", str(spec)]):
        assert runner.invoke(main, step).exit_code == 0
    store = ReleaseStore(spec.parent / "releases")
    store.record_publication(1, "oci://127.0.0.1:5000/t@sha256:" + "a" * 64)  # deploy --dry-run reads no registry
    before = _deploy(spec, tmp_path / "before", "v1")
    assert "maxReplicas: 3" in before["kserve.yaml"]  # 100 rps peak over 40 rps per replica, with headroom

    spec.write_text(spec.read_text().replace("peak_rps: 100", "peak_rps: 1000").replace("p99_ms: 50", "p99_ms: 20"))
    after = _deploy(spec, tmp_path / "after", "v1")
    assert after == before  # v1's lock, not the edited spec

    for step in (["build", "-f", str(spec)], ["release", "-f", str(spec)]):
        assert runner.invoke(main, step).exit_code == 0
    store.record_publication(2, "oci://127.0.0.1:5000/t@sha256:" + "b" * 64)
    v2 = _deploy(spec, tmp_path / "v2", "v2")
    assert v2["kserve.yaml"] != before["kserve.yaml"] and v2["prometheusrule.yaml"] != before["prometheusrule.yaml"]
