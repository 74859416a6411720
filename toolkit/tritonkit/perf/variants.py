"""``tritonkit tune --variants``: the fastest variant × config of an ONNX model that holds both a
p99 budget and an accuracy budget, on one running Triton, without a restart.

1. **Make and check.** Each recipe (:mod:`tritonkit.build.variants`: onnxruntime's offline
   optimization, int8 dynamic per-channel and per-tensor, int8 static, fp16 where the server
   has a GPU) is made from the original model file and run on the real inputs beside the
   original; a variant outside ``slo.accuracy`` is reported with its figures and dropped.
   Without real inputs only ``optimized`` (which keeps the numerics) is tried; without an
   accuracy budget, only variants whose outputs equal the original's are admitted. On a
   server with a GPU the original is also tried on onnxruntime's TensorRT execution provider
   (:data:`GPU_ACCELERATORS`, a config setting, not a file): its numerics exist only on the
   server, so its accuracy is measured there (:func:`served_outputs`).
2. **Screen.** The original and every admitted variant at the served settings, a variant's
   file loaded through the repository API in place of the repository's: the original by
   :func:`~tritonkit.perf.tune.capacity_at` (tune's concurrency climb from one request within
   the p99 budget, its share of :data:`SCREEN_SHARE` of the budget), then each variant with
   one measurement at the concurrency the original's climb ended at — the same offered load
   for every candidate. Nothing is screened when the original is the only candidate.
3. **Tune the winner's config** with the time left: the fastest variant when it beat the
   original by :data:`SCREEN_MARGIN` (one screening measurement each, and this host's
   run-to-run noise is ±10-20%), else the original. The claim is tune's: confirmed against
   the served settings in interleaved pairs, never over the budget. When the original is
   kept, its screening climb is the config search's first step, not measured twice.

   One config search, not two: the search used to tune the original's config first and
   screen at its result, and then tune the winner's again, which made the variant search
   2.4× a config-only tune's time on MiniLM (166 s against 70 s). A variant's gain (int8
   arithmetic, a fused graph) shows at any batching, so screening at the served settings ranks
   the candidates; what batching suits the winner is then the one search's to find.

The server serves the repository's model and config again at the end, on error and on Ctrl-C.

Example:
    >>> result = tune_variants("minilm", source=Path("dist/emb/minilm/1/model.onnx"), p99_ms=50,
    ...                        input_data=Path("data/text.json"), accuracy=AccuracyBudget(min_cosine=0.98),
    ...                        url="127.0.0.1:8001", budget_s=600)
    >>> result.chosen.label, result.tune.best.throughput
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tritonkit.build.variants import (
    Sample,
    accuracy,
    describe_recipe,
    make_variant,
    mask_hint,
    request_masks,
    run_requests,
)
from tritonkit.errors import ServerError, UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.perf.inputs import served_signature
from tritonkit.perf.search import Bounds, TunePoint, TuneResult, TuneSettings
from tritonkit.perf.tune import capacity_at, tune
from tritonkit.serve.client import connect, default_address, model_info, request_tensors
from tritonkit.serve.repository_api import load_model
from tritonkit.spec.inputdata import load_samples
from tritonkit.spec.intent import Accuracy, AccuracyBudget
from tritonkit.spec.schema import OnnxVariant

SCREEN_SHARE = 0.2
"""The share the screening may take (split evenly between the original and the admitted variants)."""
SCREEN_POINT_S = 1.0
"""A variant's screening budget once the original's climb found a concurrency: one measurement
there (the first point is always measured), the same offered load for every candidate."""
SCREEN_MARGIN = 1.1
"""A variant replaces the original only when it screened at least this much faster."""
ACCURACY_SAMPLES = 512
"""At most this many requests of the input data are run to check a variant (the first ones)."""
MODEL_FILE = "file:1/model.onnx"


GPU_ACCELERATORS = ("tensorrt", "tensorrt-fp16")
"""onnxruntime's TensorRT execution provider, fp32 and fp16, tried on the original model when the
server has a GPU. (A GPU instance with no accelerator runs onnxruntime's CUDA provider: that is
the original's own trial.)"""


@dataclass
class VariantTrial:
    """One candidate: ``variant`` None is the original model; ``accelerator`` a GPU execution
    provider it is served with (a :class:`~tritonkit.spec.schema.GpuAccelerator` key), "" none."""

    variant: OnnxVariant | None
    accuracy: Accuracy | None = None
    dropped: str = ""  # why it was not measured for speed ("" when it was)
    screen: TunePoint | None = None  # its most throughput within p99 at the served config
    made_s: float = 0.0
    size_bytes: int = 0
    accelerator: str = ""

    @property
    def label(self) -> str:
        made = "original" if self.variant is None else describe_recipe(self.variant)
        return f"{made} on {self.accelerator}" if self.accelerator else made


def candidates(*, data: bool, gpu: bool) -> tuple[list[VariantTrial], list[str]]:
    """The candidates besides the original, and those not tried with why."""
    placeholder = "data"  # the recipe's data key is set when the spec is written
    tried = [VariantTrial(OnnxVariant(recipe="optimized"))]
    skipped = []
    if data:
        tried += [
            VariantTrial(OnnxVariant(recipe="int8-dynamic", per_channel=True, data=placeholder)),
            VariantTrial(OnnxVariant(recipe="int8-dynamic", per_channel=False, data=placeholder)),
            VariantTrial(OnnxVariant(recipe="int8-static", per_channel=True, data=placeholder)),
        ]
        if gpu:
            tried.append(VariantTrial(OnnxVariant(recipe="fp16", data=placeholder)))
            tried += [VariantTrial(None, accelerator=key) for key in GPU_ACCELERATORS]
        else:
            skipped.append(
                "fp16 and onnxruntime's TensorRT execution provider (tensorrt, tensorrt-fp16): "
                "the server has no GPU to run them on"
            )
    else:
        skipped.append(
            "int8-dynamic, int8-static, fp16 and the GPU execution providers: they change the numerics, "
            "and no --input-data to check them on"
        )
    return tried, skipped


@dataclass
class VariantResult:
    """What :func:`tune_variants` found."""

    model: str
    p99_ms: float
    budget: AccuracyBudget | None
    trials: list[VariantTrial] = field(default_factory=list)
    not_tried: list[str] = field(default_factory=list)
    chosen: VariantTrial | None = None
    tune: TuneResult | None = None
    elapsed_s: float = 0.0


def tune_variants(
    model: str,
    *,
    source: Path,
    p99_ms: float,
    input_data: Path | None,
    accuracy_budget: AccuracyBudget | None,
    url: str | None = None,
    protocol: str = "grpc",
    gpu: bool = False,
    budget_s: float = 300.0,
    max_points: int = 30,
    bounds: Bounds | None = None,
    window_s: float = 1.0,
    confirm_pairs: int = 3,
    progress: Progress | None = None,
) -> VariantResult:
    """Search variant × batching × instances for ``model`` (see the module docstring).

    Args:
        source: the original ONNX file the server serves (a build with no ``variant:``).
        input_data: real requests (any form ``--input-data`` takes): the accuracy check, the
            calibration of int8-static, and what the load sends.

    Raises:
        UsageError: a model without batching, input data that does not fit it.
        ServerError, TuneError: as :func:`~tritonkit.perf.tune.tune`.
    """
    started = time.monotonic()
    address = url or default_address(protocol)
    signature, batching = served_signature(model, address, protocol)
    if not batching:
        raise UsageError(
            f"model '{model}' has max_batch_size 0: there is no batching to tune",
            hint="give the model a batch dimension (max_batch_size > 0) in tritonkit.yaml and rebuild",
        )
    samples = load_samples(input_data, signature, batching=True)[:ACCURACY_SAMPLES] if input_data else []
    tried, skipped = candidates(data=bool(samples), gpu=gpu)
    result = VariantResult(model=model, p99_ms=p99_ms, budget=accuracy_budget, not_tried=skipped)
    served = served_settings(model, address, protocol)

    def event(message: str) -> None:
        emit(progress, Event("tune", model, message, done=time.monotonic() - started, total=budget_s, unit="s"))

    with tempfile.TemporaryDirectory(prefix="tritonkit-variants-") as scratch:
        files: dict[str, Mapping[str, bytes] | None] = {}
        original = VariantTrial(None, size_bytes=source.stat().st_size)
        result.trials.append(original)
        reference = run_requests(source, samples, batching=True) if samples else []
        budget = accuracy_budget or AccuracyBudget()
        masks = request_masks(samples, budget.mask)
        for number, trial in enumerate(tried):
            result.trials.append(trial)
            if trial.accelerator:  # the provider's numerics exist only on the server: measured there
                event(f"checking {trial.label} on the server")
                try:
                    outputs = served_outputs(
                        model, address=address, protocol=protocol, samples=samples, names=output_names(source),
                        settings=replace(served, accelerator=trial.accelerator),
                    )  # fmt: skip
                except ServerError as exc:  # Triton refused it (no TensorRT in this build, say)
                    trial.dropped = f"{trial.label} did not load: {exc.message[:200]}"
                    continue
            else:
                assert trial.variant is not None
                event(f"making {trial.label}")
                made = time.monotonic()
                target = Path(scratch) / f"variant-{number}.onnx"
                try:
                    make_variant(
                        source,
                        target,
                        trial.variant,
                        samples=samples,
                        batching=True,
                        workdir=Path(scratch) / "prepared",
                    )
                except Exception as exc:  # onnxruntime's tools refuse some graphs: that recipe is out
                    trial.dropped = f"{trial.label} could not be made: {str(exc).strip().splitlines()[0][:200]}"
                    continue
                trial.made_s, trial.size_bytes = time.monotonic() - made, target.stat().st_size
                files[trial.label] = {MODEL_FILE: target.read_bytes()}
                outputs = run_requests(target, samples, batching=True) if samples else []
            if samples:
                trial.accuracy = accuracy(reference, outputs, masks, budget.mask)
                why = budget.misses(trial.accuracy)
                if why:
                    trial.dropped = f"outside the accuracy budget: {why}" + ("" if masks else mask_hint(samples))
                    event(f"{trial.label}: {trial.dropped}")
                    continue
        admitted = [t for t in result.trials if not t.dropped]
        common = dict(p99_ms=p99_ms, url=address, protocol=protocol, window_s=window_s, input_data=input_data)
        left = budget_s - (time.monotonic() - started)  # making and checking the variants took some
        share = max(left * SCREEN_SHARE / len(admitted), 1.0)
        level = 1  # the variants are measured where the original's climb ended
        climbed: TuneResult | None = None  # the original's climb: the config search's first step
        for trial in admitted if len(admitted) > 1 else []:
            event(f"screening {trial.label} at the served config from c={level}")
            screened = capacity_at(
                model, files=files.get(trial.label), concurrency=level, settings=_settings(served, trial),
                budget_s=share if trial is original or level == 1 else SCREEN_POINT_S, **common,  # type: ignore[arg-type]
            )  # fmt: skip
            trial.screen = screened.best
            if trial.screen is None:
                trial.dropped = f"nothing within the p99 budget at the served config and c={level}"
            elif trial is original:
                level, climbed = _level(trial.screen), screened
        result.chosen = chosen = _choose(original, [t for t in admitted if t.screen is not None])
        left = budget_s - (time.monotonic() - started)
        event(f"tuning the config of {chosen.label} ({left:.0f}s left)")
        result.tune = tune(
            model, budget_s=max(left, 1.0), max_points=max_points, bounds=bounds, confirm_pairs=confirm_pairs,
            files=files.get(chosen.label), start=_settings(served, chosen),
            climbed=climbed if chosen is original else None, progress=progress, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    result.elapsed_s = time.monotonic() - started
    return result


def _settings(served: TuneSettings, trial: VariantTrial) -> TuneSettings | None:
    """What ``trial`` is screened and tuned from: the served settings with its accelerator (None:
    the served ones as they are)."""
    return replace(served, accelerator=trial.accelerator) if trial.accelerator else None


def served_settings(model: str, address: str, protocol: str) -> TuneSettings:
    """The served model's settings (:meth:`TuneSettings.from_config` of its config).

    Raises:
        ServerError: unreachable server, unknown or unloaded model.
    """
    client = connect(address, protocol)
    try:
        return TuneSettings.from_config(model_info(client, model, address, protocol).config)
    finally:
        client.close()


def output_names(path: Path) -> list[str]:
    """The ONNX graph's outputs in order: the order :func:`~tritonkit.build.variants.run_requests` gives."""
    import onnx

    return [output.name for output in onnx.load(str(path), load_external_data=False).graph.output]


def served_outputs(
    model: str,
    *,
    address: str,
    protocol: str,
    samples: Sequence[Sample],
    names: Sequence[str],
    settings: TuneSettings,
) -> list[list[np.ndarray]]:
    """Every output in ``names`` for each sample, sent alone to ``model`` served with ``settings``
    (loaded through the repository API; the served config is loaded back after, also on error):
    what the server computes, for accelerators whose numerics exist only there.

    Raises:
        ServerError: the server refused the settings or a request.
    """
    from tritonclient.utils import InferenceServerException

    client = connect(address, protocol)
    try:
        info = model_info(client, model, address, protocol)
        datatypes = {spec["name"]: spec["datatype"] for spec in info.metadata["inputs"]}
        load_model(client, model, settings.apply(info.config), context=f"with {settings.label()}",
                   hint="the server keeps serving the previous config")  # fmt: skip
        try:
            outputs = []
            for sample in samples:
                request = request_tensors(protocol, {n: a[np.newaxis] for n, a in sample.items()}, datatypes)
                try:
                    answer = client.infer(model, request)
                except InferenceServerException as exc:
                    raise ServerError(
                        f"inference on '{model}' failed: {exc.message()}", hint="check Triton's log"
                    ) from exc
                outputs.append([answer.as_numpy(name)[0] for name in names])
            return outputs
        finally:
            load_model(client, model, info.config, context="with its served config",
                       hint="load it by hand: curl -X POST <http>/v2/repository/models/<model>/load")  # fmt: skip
    finally:
        client.close()


def _level(point: TunePoint) -> int:
    return int(point.bench.level) if point.bench.mode == "concurrency" else 1


def _choose(original: VariantTrial, screened: list[VariantTrial]) -> VariantTrial:
    """The fastest screened variant when it beat the original by :data:`SCREEN_MARGIN`, else the original."""
    variants = [t for t in screened if t.variant is not None and t.screen is not None]
    if not variants:
        return original
    fastest = max(variants, key=lambda t: t.screen.throughput if t.screen else 0.0)
    assert fastest.screen is not None
    if original.screen is None or fastest.screen.throughput >= original.screen.throughput * SCREEN_MARGIN:
        return fastest
    return original
