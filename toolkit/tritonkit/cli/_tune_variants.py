"""``tritonkit tune --variants`` for ``kind: onnx`` models: what the search needs, its table, its document.

The search is :mod:`tritonkit.perf.variants`; this module checks the flags and the spec against
what it needs (an onnx model built without a variant, real inputs inside the project so the
build can check the recipe again), renders each variant's accuracy and screening point, and
gives the ``variant:`` block tune writes into the spec. :mod:`tritonkit.cli.perf` calls it.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from tritonkit.cli._common import console
from tritonkit.cli._output import record
from tritonkit.errors import UsageError
from tritonkit.spec.intent import AccuracyBudget
from tritonkit.spec.schema import LoadedSpec, OnnxModel


@dataclass
class VariantSearch:
    """What ``tune --variants`` searches from, and (after the search) what it found."""

    source: Path  # the original model file the server serves
    data: str | None  # --input-data relative to the spec, as the written variant records it
    budget: AccuracyBudget | None
    gpu: bool
    found: Any = None  # perf.variants.VariantResult

    @classmethod
    def prepare(
        cls,
        loaded: LoadedSpec,
        entry: Any,
        *,
        repository: Callable[[], Path],
        input_data: Path | None,
        rate: float | None,
        url: str | None,
        metrics_url: str | None,
    ) -> VariantSearch:
        """Check that a variant search can run for ``entry``, before any server starts.

        Raises:
            UsageError: not an onnx model; one already built as a variant; --rate; input data
                outside the project; a repository without the model's file, or with external data.
        """
        name = entry.name
        if not isinstance(entry, OnnxModel):
            raise UsageError(f"--variants is for kind: onnx models; '{name}' is {entry.kind}", hint="leave it out")
        if entry.variant is not None:
            raise UsageError(
                f"'{name}' is already built as variant {entry.variant.recipe}: variants are searched from the original",
                hint="remove its 'variant:' from the spec, build, and tune again",
            )
        if rate is not None:
            raise UsageError("--variants searches for the most throughput within p99", hint="leave out --rate")
        data = None
        if input_data is not None:
            resolved = input_data.resolve()
            if not resolved.is_relative_to(loaded.project):
                raise UsageError(
                    f"--input-data {input_data} is outside the project ({loaded.project})",
                    hint="copy the data into the project: every build checks the chosen variant on it again",
                )
            data = os.path.relpath(resolved, loaded.root)
        version = repository() / name / "1"  # no build yet: its own error, after the checks above
        source = version / "model.onnx"
        if not source.is_file():
            raise UsageError(f"no {source} to make variants from", hint="build the spec first: tritonkit build")
        others = sorted(p.name for p in version.iterdir() if p.name != "model.onnx")
        if others:
            raise UsageError(
                f"'{name}' keeps data beside its model ({', '.join(others[:3])}): "
                "variants of such models are not made yet",
                hint="tune it without --variants",
            )
        budget = entry.slo.accuracy if entry.slo is not None else None
        return cls(source=source, data=data, budget=budget, gpu=_server_has_gpu(url, metrics_url))

    def show(self) -> None:
        """The variants table, and the search's part of the ``--json`` document."""
        found = self.found
        table = Table(title=f"variants of {found.model}", title_justify="left", box=box.SIMPLE, pad_edge=False)
        for column in ("variant", "MB", "accuracy", "inf/s", "p99", "at", "outcome"):
            table.add_column(column, justify="left" if column in ("variant", "accuracy", "outcome") else "right")
        rows = []
        for trial in found.trials:
            screen = trial.screen
            outcome = "chosen" if trial is found.chosen else (trial.dropped or "slower")
            table.add_row(
                trial.label,
                f"{trial.size_bytes / 1e6:.2f}" if trial.size_bytes else "",
                trial.accuracy.describe()
                if trial.accuracy
                else ("exact (the original)" if trial.variant is None else "—"),
                f"{screen.throughput:.0f}" if screen else "",
                f"{screen.p99_ms:.2f}" if screen else "",
                screen.offered if screen else "",
                outcome,
                style="bold green" if trial is found.chosen else "",
            )
            rows.append(
                {
                    "variant": trial.label,
                    "recipe": trial.variant.model_dump(exclude={"data"}) if trial.variant else None,
                    "accelerator": trial.accelerator or None,
                    "bytes": trial.size_bytes,
                    "accuracy": trial.accuracy.model_dump() if trial.accuracy else None,
                    "throughput": screen.throughput if screen else None,
                    "p99_ms": screen.p99_ms if screen else None,
                    "dropped": trial.dropped or None,
                }
            )
        console.print(table)
        for line in found.not_tried:
            console.print(f"not tried: {line}")
        why = "screened fastest within the budgets" if found.chosen.screen else "the only one within the budgets"
        console.print(f"tuning the config of: [bold]{found.chosen.label}[/] ({why})")
        record(variants=rows, variant=self.chosen(), not_tried=found.not_tried)

    def chosen(self) -> dict[str, Any] | None:
        """The ``variant:`` block for the spec (None: the original was chosen)."""
        variant = self.found.chosen.variant if self.found is not None and self.found.chosen else None
        if variant is None:
            return None
        block: dict[str, Any] = {"recipe": variant.recipe}
        if variant.recipe.startswith("int8"):
            block["per_channel"] = variant.per_channel
        if self.data is not None:
            block["data"] = self.data
        return block


def _server_has_gpu(url: str | None, metrics_url: str | None) -> bool:
    """Whether the server reports a GPU (Triton's ``nv_gpu_utilization`` metric). The embedded
    server (no ``--url``) is CPU-only; a server whose metrics were not given counts as none."""
    if url is None or metrics_url is None:
        return False
    try:
        with urllib.request.urlopen(f"{metrics_url.rstrip('/')}", timeout=5) as response:  # noqa: S310 - operator's URL
            return "nv_gpu_utilization{" in response.read().decode(errors="replace")
    except OSError:
        return False
