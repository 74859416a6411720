"""Check a built repository against its lock file and Triton's schema.

Findings, each with a kind and a path:

- ``added`` / ``missing`` / ``changed``: files that differ from the lock (re-hashed).
- ``lock``: the lock's digest does not match the files it lists (the lock was edited).
- ``engine``: a TensorRT engine built for another TensorRT version or GPU compute capability
  than this machine's (checked only where this machine has TensorRT / a GPU).
- ``config``: a config.pbtxt that does not parse (with line:column) or names another model.
- ``layout``: a model without config.pbtxt or version directories, or a non-numeric version.
- ``artifact``: the model file or an external data file it references is missing, or its
  inputs/outputs disagree with the config.
- ``ensemble``: an ensemble's wiring is broken (see :func:`tritonkit.build.ensembles.wiring_problems`).

Example:
    >>> report = verify(Path("dist/demo"))
    >>> report.ok, [f.kind for f in report.findings]
    (True, [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.artifact.hashing import LOCK_FILE, hash_tree, repository_digest
from tritonkit.artifact.lock import intent_of, read_lock
from tritonkit.build import pbtxt
from tritonkit.build.modelconfig import same_tensor_dims, tensors_from_config
from tritonkit.errors import SpecError, TritonkitError, VerifyError

_ARTIFACTS = {"onnxruntime": "model.onnx", "python": "model.py", "tensorrt": "model.plan", "pytorch": "model.pt"}


@dataclass(frozen=True)
class Finding:
    """One problem found in a repository."""

    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind:8} {self.path}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """Everything :func:`verify` found; ``ok`` only when nothing was."""

    root: Path
    digest: str
    files: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def verify(root: Path) -> VerifyReport:
    """Re-hash, parse and cross-check a repository.

    Args:
        root: the repository directory (or the ``<name>`` alias symlink).

    Returns:
        The report; inspect ``ok`` and ``findings``.

    Raises:
        VerifyError: when ``root`` is not a tritonkit repository at all (no lock).
    """
    root = root.resolve()
    lock = read_lock(root)
    findings: list[Finding] = []
    actual = hash_tree(root)
    for rel in sorted(set(actual) - set(lock.files)):
        bytecode = rel.endswith(".pyc") or "/__pycache__/" in f"/{rel}"
        why = "bytecode not in the lock file: Python would run it instead of the source" if bytecode else ""
        findings.append(Finding("added", rel, why or "not in the lock file"))
    for rel in sorted(set(lock.files) - set(actual)):
        findings.append(Finding("missing", rel, "listed in the lock file but absent"))
    for rel in sorted(set(actual) & set(lock.files)):
        if actual[rel] != lock.files[rel]:
            findings.append(
                Finding("changed", rel, f"sha256 {actual[rel].sha256[:12]}… != locked {lock.files[rel].sha256[:12]}…")
            )
    if repository_digest(lock.files, intent_of(lock.models)) != lock.digest:
        findings.append(
            Finding("lock", LOCK_FILE, "digest does not match the files and intent (slo, capacity) it lists")
        )
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        findings.extend(_check_model(model_dir))
    findings.extend(_check_ensembles(root))
    for name in sorted(set(lock.models) - {p.name for p in root.iterdir() if p.is_dir()}):
        findings.append(Finding("layout", name, "model listed in the lock file has no directory"))
    if any(entry.get("engine") for entry in lock.models.values()):
        # Engines only run on the TensorRT version and compute capability they were built for;
        # checked against this machine where it has TensorRT / a GPU (skipped where it has none).
        from tritonkit.build.engines import engine_problems, runtime

        local = runtime()
        for name, entry in sorted(lock.models.items()):
            findings.extend(Finding("engine", name, problem) for problem in engine_problems(entry, local))
    return VerifyReport(root=root, digest=lock.digest, files=len(actual), findings=findings)


def _check_ensembles(root: Path) -> list[Finding]:
    from tritonkit.build.ensembles import PLATFORM, wiring_problems

    configs = {}
    for path in root.glob("*/config.pbtxt"):
        try:
            configs[path.parent.name] = pbtxt.parse(path.read_text(errors="replace"))
        except pbtxt.PbtxtError:
            continue  # already reported by _check_model
    return [
        Finding("ensemble", name, problem)
        for name, config in sorted(configs.items())
        if config.platform == PLATFORM
        for problem in wiring_problems(config, configs)
    ]


def _check_model(model_dir: Path) -> list[Finding]:
    name = model_dir.name
    config_path = model_dir / "config.pbtxt"
    if not config_path.is_file():
        return [Finding("layout", name, "no config.pbtxt")]
    try:
        config = pbtxt.parse(config_path.read_text(errors="replace"))
    except pbtxt.PbtxtError as exc:
        return [Finding("config", f"{name}/config.pbtxt:{exc.line}:{exc.column}", str(exc))]
    findings = []
    if config.name and config.name != name:
        findings.append(Finding("config", f"{name}/config.pbtxt", f"name '{config.name}' != directory '{name}'"))
    entries = [p for p in model_dir.iterdir() if p.is_dir() and p.name != "__pycache__"]
    bad = [p.name for p in entries if not p.name.isdigit()]
    for entry in bad:
        findings.append(Finding("layout", f"{name}/{entry}", "version directories must be numbers"))
    versions = sorted((p for p in entries if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        findings.append(Finding("layout", name, "no version directory (expected e.g. 1/)"))
    for version in versions:
        findings.extend(_check_artifact(config, version))
    return findings


def _check_artifact(config: pb.ModelConfig, version: Path) -> list[Finding]:
    rel = f"{version.parent.name}/{version.name}"
    backend = config.backend or {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(
        config.platform, ""
    )
    filename = config.default_model_filename or _ARTIFACTS.get(backend, "")
    if not filename:
        return []
    artifact = version / filename
    if not artifact.exists():
        return [Finding("artifact", f"{rel}/{filename}", f"missing (backend '{backend}' needs it)")]
    if backend != "onnxruntime":
        return []
    from tritonkit.build.onnx_io import external_data_files, graph_io

    declared_inputs, declared_outputs = tensors_from_config(config)
    try:
        # a tensor the graph leaves without a shape was declared in the spec: the config says it
        graph_inputs, graph_outputs = graph_io(
            artifact, config.max_batch_size, declared=[*declared_inputs, *declared_outputs]
        )
        external = external_data_files(artifact)
    except SpecError as exc:
        return [Finding("artifact", f"{rel}/{filename}", exc.detail)]
    # The lock catches a data file removed or changed after the build; this catches one the
    # build never copied (the lock then agrees with the files, and Triton still cannot load).
    findings = [
        Finding("artifact", f"{rel}/{data}", f"external data of {filename} is missing")
        for data in external
        if not (version / data).is_file()
    ]
    for what, declared, graph in (
        ("input", declared_inputs, graph_inputs),
        ("output", declared_outputs, graph_outputs),
    ):
        by_name = {t.name: t for t in graph}
        for tensor in declared:
            actual = by_name.get(tensor.name)
            if actual is None:
                findings.append(
                    Finding("artifact", f"{rel}/{filename}", f"config {what} '{tensor.name}' is not in the graph")
                )
            elif actual.dtype != tensor.dtype:
                findings.append(
                    Finding(
                        "artifact",
                        f"{rel}/{filename}",
                        f"{what} '{tensor.name}': config {tensor.dtype}, graph {actual.dtype}",
                    )
                )
            elif not same_tensor_dims(actual.dims, tensor.dims):
                findings.append(
                    Finding(
                        "artifact",
                        f"{rel}/{filename}",
                        f"{what} '{tensor.name}': config dims {tensor.dims}, graph {actual.dims}",
                    )
                )
    return findings


def require_verified(
    root: Path,
    *,
    subject: str = "",
    consequence: str = "",
    hint: str = "",
    error: type[TritonkitError] = VerifyError,
) -> VerifyReport:
    """Verify ``root`` and raise ``error`` naming the first finding when it does not pass.

    Every stage that hands a repository on (serve, release, export, promote, publish, pull)
    verifies it first through this one function.

    Args:
        root: the repository.
        subject: how to name it in the message (default: its path).
        consequence: what was not done because of it ("not published").
        hint: what to do (default: run verify for every finding, then rebuild).
        error: the error class to raise (a server refusing to serve raises ServerError).

    Returns:
        The passing report.
    """
    report = verify(root)
    if not report.ok:
        raise error(
            f"{subject or root} failed verification ({report.findings[0]})"
            + (f"; {consequence}" if consequence else ""),
            hint=hint or f"run 'tritonkit verify {root}' for all findings, then rebuild",
        )
    return report
