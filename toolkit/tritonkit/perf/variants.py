"""``tritonkit tune --variants``: the fastest variant × config of an ONNX model that holds both a
p99 budget and an accuracy budget, on one running Triton, without a restart.

1. **Make and check.** Each recipe (:mod:`tritonkit.build.variants`: onnxruntime's offline
   optimization, int8 dynamic per-channel and per-tensor, int8 static, fp16 where the server
   has a GPU) is made from the original model file and run on the real inputs beside the
   original; a variant outside ``slo.accuracy`` is reported with its figures and dropped.
   Without real inputs only ``optimized`` (which keeps the numerics) is tried; without an
   accuracy budget, only variants whose outputs equal the original's are admitted.
2. **Tune the config** of the original (:func:`~tritonkit.perf.tune.tune`, half the time
   budget): the settings ``S`` and the concurrency ``c`` every variant is compared at.
3. **Screen.** The original and every admitted variant at ``S`` from ``c``:
   :func:`~tritonkit.perf.tune.capacity_at` (tune's concurrency climb within the p99 budget), a
   variant's file loaded through the repository API in place of the repository's. All measured
   the same way, in the same windows, one after another (:data:`SCREEN_SHARE` of the budget).
4. **Tune the winner's config** from ``S`` with the time left — the fastest variant when it beat
   the original by :data:`SCREEN_MARGIN` (one screening measurement each, and this host's
   run-to-run noise is ±10-20%); otherwise the original keeps step 2's result. Either way the
   claim is tune's: confirmed against ``S`` in interleaved pairs, never over the budget.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.build.variants import accuracy, describe_recipe, make_variant, run_requests
from tritonkit.errors import UsageError
from tritonkit.events import Event, Progress, emit
from tritonkit.perf.inputs import served_signature
from tritonkit.perf.search import Bounds, TunePoint, TuneResult
from tritonkit.perf.tune import capacity_at, tune
from tritonkit.serve.client import default_address
from tritonkit.spec.inputdata import load_samples
from tritonkit.spec.intent import Accuracy, AccuracyBudget
from tritonkit.spec.schema import OnnxVariant

CONFIG_SHARE = 0.5
"""The share of the time budget left after making the variants that the config search on the
original model takes."""
SCREEN_SHARE = 0.2
"""The share the screening may take (split evenly between the original and the admitted variants)."""
SCREEN_MARGIN = 1.1
"""A variant replaces the original only when it screened at least this much faster."""
ACCURACY_SAMPLES = 512
"""At most this many requests of the input data are run to check a variant (the first ones)."""
MODEL_FILE = "file:1/model.onnx"


def candidates(*, data: bool, gpu: bool) -> tuple[list[OnnxVariant], list[str]]:
    """The recipes to try, and those not tried with why."""
    placeholder = "data"  # the recipe's data key is set when the spec is written
    tried = [OnnxVariant(recipe="optimized")]
    skipped = []
    if data:
        tried += [
            OnnxVariant(recipe="int8-dynamic", per_channel=True, data=placeholder),
            OnnxVariant(recipe="int8-dynamic", per_channel=False, data=placeholder),
            OnnxVariant(recipe="int8-static", per_channel=True, data=placeholder),
        ]
        if gpu:
            tried.append(OnnxVariant(recipe="fp16", data=placeholder))
        else:
            skipped.append("fp16: the server has no GPU to run it on (on a CPU it only adds casts)")
    else:
        skipped.append(
            "int8-dynamic, int8-static, fp16: they change the numerics, and no --input-data to check them on"
        )
    return tried, skipped


@dataclass
class VariantTrial:
    """One candidate: ``variant`` None is the original model."""

    variant: OnnxVariant | None
    accuracy: Accuracy | None = None
    dropped: str = ""  # why it was not measured for speed ("" when it was)
    screen: TunePoint | None = None  # its most throughput within p99 at the served config
    made_s: float = 0.0
    size_bytes: int = 0

    @property
    def label(self) -> str:
        return "original" if self.variant is None else describe_recipe(self.variant)


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

    def event(message: str) -> None:
        emit(progress, Event("tune", model, message, done=time.monotonic() - started, total=budget_s, unit="s"))

    with tempfile.TemporaryDirectory(prefix="tritonkit-variants-") as scratch:
        files: dict[str, Mapping[str, bytes] | None] = {"original": None}
        original = VariantTrial(None, size_bytes=source.stat().st_size)
        result.trials.append(original)
        reference = run_requests(source, samples, batching=True) if samples else []
        for number, variant in enumerate(tried):
            trial = VariantTrial(variant)
            result.trials.append(trial)
            event(f"making {trial.label}")
            made = time.monotonic()
            target = Path(scratch) / f"variant-{number}.onnx"
            try:
                make_variant(
                    source, target, variant, samples=samples, batching=True, workdir=Path(scratch) / str(number)
                )
            except Exception as exc:  # onnxruntime's tools refuse some graphs: that recipe is out
                trial.dropped = f"{trial.label} could not be made: {str(exc).strip().splitlines()[0][:200]}"
                continue
            trial.made_s, trial.size_bytes = time.monotonic() - made, target.stat().st_size
            if samples:
                trial.accuracy = accuracy(reference, run_requests(target, samples, batching=True))
                why = (accuracy_budget or AccuracyBudget()).misses(trial.accuracy)
                if why:
                    trial.dropped = f"outside the accuracy budget: {why}"
                    event(f"{trial.label}: {trial.dropped}")
                    continue
            files[trial.label] = {MODEL_FILE: target.read_bytes()}
        admitted = [t for t in result.trials if not t.dropped]
        common = dict(p99_ms=p99_ms, url=address, protocol=protocol, window_s=window_s, input_data=input_data)
        event("tuning the config of the original")
        left = budget_s - (time.monotonic() - started)  # making and checking the variants took some
        base = tune(
            model, budget_s=max(left * CONFIG_SHARE, 1.0), max_points=max_points, bounds=bounds,
            confirm_pairs=confirm_pairs, progress=progress, **common,  # type: ignore[arg-type]
        )  # fmt: skip
        point = base.best or base.baseline
        settings = point.settings if point is not None else base.original
        level = int(point.bench.level) if point is not None and point.bench.mode == "concurrency" else 1
        share = left * SCREEN_SHARE / len(admitted)
        for trial in admitted:
            event(f"screening {trial.label} at {settings.label()}, c={level}")
            screened = capacity_at(
                model, files=files[trial.label], settings=settings, concurrency=level, budget_s=share,
                **common,  # type: ignore[arg-type]
            )  # fmt: skip
            trial.screen = screened.best
            if trial.screen is None:
                trial.dropped = f"nothing within the p99 budget at {settings.label()}"
        result.chosen = _choose(original, [t for t in admitted if t.screen is not None])
        if result.chosen is original:
            result.tune = base
        else:
            left = budget_s - (time.monotonic() - started)
            event(f"tuning the config of {result.chosen.label} from {settings.label()} ({left:.0f}s left)")
            result.tune = tune(
                model, budget_s=max(left, 1.0), max_points=max_points, bounds=bounds, confirm_pairs=confirm_pairs,
                files=files[result.chosen.label], start=settings, progress=progress, **common,  # type: ignore[arg-type]
            )  # fmt: skip
    result.elapsed_s = time.monotonic() - started
    return result


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
