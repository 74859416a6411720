"""In-flight batching vs static batching vs one request at a time, served by the embedded Triton.

One spec, one build, one server, three models with the same random-init weights (GPT-2 family,
4 layers, hidden 256, seed 0, byte tokenizer, CPU):

1. ``sequential``: tritonkit's in-flight engine with ``scheduler.max_running: 1`` — the server
   generates for one request at a time; the others wait in its queue;
2. ``static``: ``scheduler.mode: static`` — Triton's dynamic batcher (``max_batch_size`` = the
   concurrency, 20 ms queue delay) hands a batch to ``generate()``, which answers every request
   of the batch when its longest sequence ends;
3. ``inflight``: tritonkit's in-flight engine with ``max_running`` = the concurrency and a KV
   budget that never preempts.

Each model gets the same seeded workload, once per output-length mix: ``--requests`` (96)
prompts of 15–63 printable ASCII characters (16–64 tokens with the BOS token) with output
lengths forced by ``{"max_tokens": n, "temperature": 0, "ignore_eos": true}``, n drawn from

- uniform: 8–256;
- heavy-tailed: exactly 75% in 8–32 and 25% in 160–256, shuffled.

Load is a closed loop: C client threads (``--concurrency``, default 16, inside the issue's 8–32;
``--concurrency 8 32`` runs both ends), each with its own gRPC stream, each sending the next
request of the shared list as soon as its previous one ended. ``sequential`` gets the same C
concurrent clients, so it answers the same offered load one request at a time and its TTFT
includes waiting behind the others. Every request streams (``stream: true``); ``static``
answers once, with the whole text.

Measured on the client, per model and mix:

- output tokens/s: generated tokens (``num_output_tokens``) / wall time, first send to last final;
- TTFT p50/p99: from send to the first response carrying text (the whole answer for ``static``);
- inter-token latency p50/p99: every gap between consecutive streamed responses of a request;
  n/a for ``static``, which sends one response per request (no gaps to measure);
- tokens per response and requests with no text before their final response (both should be
  1 and 0 for the streaming configs: text is held back only while it ends in an unfinished
  UTF-8 character or could still become a stop string);
- ``static``'s mean batch (Triton's inference count / execution count), to show batches formed.

Every request must end with one final response, ``finish_reason: length`` and exactly n tokens;
anything else is an error: errors are printed and the script exits 1.

Each model runs with ``threads: 1`` (torch intra-op threads): the host has 2 cores shared by
the model, Triton's frontend and the C client threads, and a decode step of this small model is
dominated by per-op overhead, not arithmetic; one thread per model keeps the three configs on
equal, uncontended terms.

Prints a table per mix (and concurrency) with the configs side by side, the ratios and whether
the issue's targets are met (on the heavy-tailed mix in-flight ≥ 2× static and ≥ 6× sequential
output tokens/s with a lower TTFT p99 than static; on the uniform mix ≥ 1.15× static), and
writes ``llm_batching.png`` and ``llm_batching.json`` into ``--out``. A full run takes about 3.5
minutes on a 2-core CPU host with ``--repeat 1``, about 6 with the default ``--repeat 3`` (static
and inflight run three times, alternating, and the run with the median throughput is reported:
on a shared 2-core host one run of static varies by ±25%); ``--quick`` (24 requests, outputs of
at most 64 tokens, under a minute) is a smoke check, and the targets are for the full run.

    .venv/bin/python benchmarks/llm_batching.py [--quick] [--concurrency 16] [--seed 0] [--out reports/llm_batching]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tritonkit import Endpoints, TritonServer, build_repository, load_spec
from tritonkit.perf.stats import percentile
from tritonkit.serve.llm_client import Generation, LlmStream

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("sequential", "static", "inflight")
RANDOM_INIT = {"family": "gpt2", "layers": 4, "hidden_size": 256, "heads": 4, "max_positions": 512, "seed": 0}
PROMPT_CHARS = (15, 63)  # + BOS = 16–64 tokens
BATCH_DELAY_US = 20_000
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Mix:
    """Output lengths: parts of (share of the requests, fewest tokens, most tokens), each uniform."""

    name: str
    parts: tuple[tuple[float, int, int], ...]

    @property
    def longest(self) -> int:
        return max(high for _, _, high in self.parts)


MIXES = (Mix("uniform", ((1.0, 8, 256),)), Mix("heavy-tailed", ((0.75, 8, 32), (0.25, 160, 256))))
QUICK_MIXES = (Mix("uniform", ((1.0, 8, 64),)), Mix("heavy-tailed", ((0.75, 8, 16), (0.25, 40, 64))))


@dataclass(frozen=True)
class Request:
    prompt: str
    max_tokens: int


@dataclass
class Result:
    """One model on one workload (``_ms`` fields in milliseconds; None where not measurable)."""

    mix: str
    concurrency: int
    config: str
    requests: int
    output_tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float | None
    itl_p99_ms: float | None
    tokens_per_response: float
    silent_until_final: int
    mean_batch: float | None
    errors: list[str] = field(default_factory=list)


class BatchedStream(LlmStream):
    """An :class:`LlmStream` for a model with ``max_batch_size > 0`` (``static``): inputs are [1, 1]."""

    shape = (1, 1)


# --------------------------------------------------------------------------- workload and server


def workload(mix: Mix, count: int, seed: int) -> list[Request]:
    """``count`` seeded requests: exact shares of each length part, shuffled, random prompts."""
    rng = random.Random(f"{seed}:{mix.name}")
    sizes = [round(share * count) for share, _, _ in mix.parts[:-1]]
    sizes.append(count - sum(sizes))
    lengths = [rng.randint(low, high) for (_, low, high), size in zip(mix.parts, sizes) for _ in range(size)]
    rng.shuffle(lengths)
    return [Request(_prompt(rng), n) for n in lengths]


def _prompt(rng: random.Random) -> str:
    return "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(*PROMPT_CHARS)))


def spec(capacity: int, longest: int) -> dict[str, Any]:
    """The three models; ``capacity`` is the most requests in flight, ``longest`` the most output tokens."""
    common = {"kind": "llm", "random_init": RANDOM_INIT, "device": "cpu", "threads": 1}
    kv_tokens = capacity * (PROMPT_CHARS[1] + 1 + longest + 8)  # every row at its longest: no preemption
    return {
        "name": "llmbatching",
        "models": [
            {**common, "name": "sequential", "scheduler": {"max_running": 1, "max_queue": capacity}},
            {
                **common,
                "name": "static",
                "max_batch_size": capacity,
                "dynamic_batching": {"max_queue_delay_microseconds": BATCH_DELAY_US},
                "scheduler": {"mode": "static"},
            },
            {
                **common,
                "name": "inflight",
                "scheduler": {"max_running": capacity, "kv_cache_tokens": kv_tokens, "max_queue": capacity},
            },
        ],
    }


# --------------------------------------------------------------------------- driving


def drive(
    url: str, model: str, requests: list[Request], concurrency: int, advance: Callable[[], None]
) -> list[Generation | None]:
    """Closed loop: ``concurrency`` clients, each sending the next request when its last one ended.

    The streams are opened first and the clients start together, so that connection set-up does
    not stagger the first requests (which would split ``static``'s batches for the whole run).
    """
    generations: list[Generation | None] = [None] * len(requests)
    pending = iter(range(len(requests)))
    lock = threading.Lock()
    stream_class = BatchedStream if model == "static" else LlmStream
    streams = [stream_class(url, model) for _ in range(concurrency)]
    start = threading.Barrier(concurrency)

    def client(stream: LlmStream) -> None:
        start.wait()
        index = None
        try:
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                request = requests[index]
                params = {"max_tokens": request.max_tokens, "temperature": 0, "ignore_eos": True}
                generations[index] = stream.send(request.prompt, params)
                stream.wait(REQUEST_TIMEOUT_S)
                advance()
        except Exception as exc:  # this client stops; its request is an error, the rest go to the others
            stream.cancel()
            if index is not None:
                generations[index] = Generation(prompt="", sent_at=0.0, error=f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(stream,), name=f"client-{i}") for i, stream in enumerate(streams)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for stream in streams:
            stream.close()
    return generations


def problem(request: Request, generation: Generation | None) -> str | None:
    """Why a request did not do what it was asked, or None."""
    if generation is None:
        return "never answered (its client stopped after an error)"
    if generation.error:
        return generation.error
    if generation.finals != 1:
        return f"{generation.finals} final responses"
    if generation.finish_reason != "length" or generation.output_tokens != request.max_tokens:
        return f"finish_reason {generation.finish_reason}, {generation.output_tokens} of {request.max_tokens} tokens"
    return None


def batch_counts(url: str, model: str) -> tuple[int, int]:
    """Triton's (executions, inferences) of a model so far; deltas give the mean batch of ``static``."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model).model_stats[0]
        return stats.execution_count, stats.inference_count
    finally:
        client.close()


def measure(
    mix: str,
    concurrency: int,
    model: str,
    requests: list[Request],
    gens: list[Generation | None],
    mean_batch: float | None,
) -> Result:
    errors = [f"{model} request {i}: {p}" for i, (r, g) in enumerate(zip(requests, gens)) if (p := problem(r, g))]
    done = [g for r, g in zip(requests, gens) if g is not None and problem(r, g) is None]
    tokens = sum(g.output_tokens for g in done)
    wall = max((g.done_at or 0.0 for g in done), default=0.0) - min((g.sent_at for g in done), default=0.0)
    ttft = [g.ttft for g in done if g.ttft is not None]
    gaps = [gap for g in done for gap in g.inter_token] if model != "static" else []
    responses = sum(len(g.chunk_times) for g in done)
    return Result(
        mix=mix,
        concurrency=concurrency,
        config=model,
        requests=len(requests),
        output_tokens=tokens,
        wall_s=wall,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        ttft_p50_ms=_percentile(ttft, 50),
        ttft_p99_ms=_percentile(ttft, 99),
        itl_p50_ms=_percentile(gaps, 50) if gaps else None,
        itl_p99_ms=_percentile(gaps, 99) if gaps else None,
        tokens_per_response=tokens / responses if responses else 0.0,
        silent_until_final=sum(1 for g in done if len(g.chunk_times) == 1 and g.output_tokens > 1),
        mean_batch=mean_batch,
        errors=errors,
    )


def _percentile(seconds: list[float], q: float) -> float:
    """Milliseconds, by the toolkit's one percentile definition (nearest rank, perf/stats.py)."""
    return percentile(seconds, q) * 1000 if seconds else float("nan")


def run_all(
    url: str, mixes: tuple[Mix, ...], count: int, levels: list[int], seed: int, console: Console, repeat: int = 1
) -> list[Result]:
    results: list[Result] = []
    with Progress(console=console, transient=True) as progress:
        warm = progress.add_task("warm-up", total=len(CONFIGS) * max(levels))
        short = [Request(r.prompt, 8) for r in workload(mixes[0], max(levels), seed + 1)]
        for model in CONFIGS:  # first calls pay lazy initialisation; keep that out of the numbers
            drive(url, model, short, max(levels), functools.partial(progress.advance, warm))
        progress.remove_task(warm)
        for mix in mixes:
            requests = workload(mix, count, seed)
            for level in levels:
                rounds: dict[str, list[Result]] = {model: [] for model in CONFIGS}
                for round_ in range(repeat):
                    # sequential is measured once: it is slow and far from every threshold
                    for model in CONFIGS if round_ == 0 else [m for m in CONFIGS if m != "sequential"]:
                        label = f"{mix.name} c={level} {model}" + (f" #{round_ + 1}" if repeat > 1 else "")
                        task = progress.add_task(label, total=len(requests))
                        before = batch_counts(url, model)
                        gens = drive(url, model, requests, level, functools.partial(progress.advance, task))
                        after = batch_counts(url, model)
                        progress.remove_task(task)
                        executions, inferences = after[0] - before[0], after[1] - before[1]
                        mean_batch = inferences / executions if model == "static" and executions else None
                        result = measure(mix.name, level, model, requests, gens, mean_batch)
                        rounds[model].append(result)
                        progress.console.print(
                            f"{label}: {result.tokens_per_s:.0f} tokens/s, TTFT p99 {result.ttft_p99_ms:.0f} ms, "
                            f"{result.wall_s:.1f} s, {len(result.errors)} errors"
                        )
                for model, runs in rounds.items():  # the run with the median throughput stands for the config
                    ordered = sorted(runs, key=lambda r: r.tokens_per_s)
                    results.append(ordered[len(ordered) // 2])
                    if len(runs) > 1:
                        spread = f"{ordered[0].tokens_per_s:.0f}–{ordered[-1].tokens_per_s:.0f}"
                        progress.console.print(f"{mix.name} c={level} {model}: median of {len(runs)}, range {spread}")
    return results


# --------------------------------------------------------------------------- reporting


def targets(mix: str, by: dict[str, Result]) -> list[tuple[str, bool]]:
    """The issue's targets for this mix, each with whether the measurement meets it."""
    seq, static, inflight = by["sequential"], by["static"], by["inflight"]
    to_static = _divide(inflight.tokens_per_s, static.tokens_per_s)
    if mix == "uniform":
        return [(f"in-flight ≥ 1.15× static tokens/s ({to_static:.2f}×)", to_static >= 1.15)]
    to_seq = _divide(inflight.tokens_per_s, seq.tokens_per_s)
    return [
        (f"in-flight ≥ 2× static tokens/s ({to_static:.2f}×)", to_static >= 2.0),
        (f"in-flight ≥ 6× sequential tokens/s ({to_seq:.2f}×)", to_seq >= 6.0),
        (
            f"in-flight TTFT p99 < static ({inflight.ttft_p99_ms:.0f} vs {static.ttft_p99_ms:.0f} ms)",
            inflight.ttft_p99_ms < static.ttft_p99_ms,
        ),
    ]


def _divide(top: float, bottom: float) -> float:
    return top / bottom if bottom else float("nan")


def _cell(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or value != value else f"{value:,.{digits}f}"


def _ratio(top: float | None, bottom: float | None) -> str:
    return "" if top is None or bottom is None or not bottom or top != top else f"{top / bottom:.2f}×"


def table(mix: Mix, level: int, by: dict[str, Result], count: int) -> Table:
    seq, static, inflight = by["sequential"], by["static"], by["inflight"]
    parts = ", ".join(f"{share:.0%} {low}–{high}" for share, low, high in mix.parts)
    title = f"{mix.name} mix (output tokens {parts}), {count} requests, {level} concurrent clients"
    out = Table(title=title, title_justify="left")
    for column in ("", *CONFIGS, "inflight/static", "inflight/seq"):
        out.add_column(column, justify="right")
    rows: list[tuple[str, str, int, bool]] = [
        ("output tokens/s", "tokens_per_s", 0, True),
        ("TTFT p50 ms", "ttft_p50_ms", 0, True),
        ("TTFT p99 ms", "ttft_p99_ms", 0, True),
        ("inter-token p50 ms", "itl_p50_ms", 1, True),
        ("inter-token p99 ms", "itl_p99_ms", 1, True),
        ("tokens/response", "tokens_per_response", 2, False),
        ("silent until final", "silent_until_final", 0, False),
        ("generate() batch mean", "mean_batch", 1, False),
        ("output tokens", "output_tokens", 0, False),
        ("wall time s", "wall_s", 1, False),
    ]
    for label, key, digits, ratios in rows:
        values = [getattr(r, key) for r in (seq, static, inflight)]
        cells = [_cell(v, digits) for v in values]
        extra = [_ratio(values[2], values[1]), _ratio(values[2], values[0])] if ratios else ["", ""]
        out.add_row(label, *cells, *extra)
    return out


def report(console: Console, results: list[Result], mixes: tuple[Mix, ...], args: argparse.Namespace) -> None:
    for mix in mixes:
        for level in args.concurrency:
            by = {r.config: r for r in results if r.mix == mix.name and r.concurrency == level}
            console.print(table(mix, level, by, args.requests))
            note = " (a --quick workload; the targets are set for the full one)" if args.quick else ""
            console.print(f"targets{note}:")
            for text, met in targets(mix.name, by):
                console.print(f"  {'[green]met[/]' if met else '[red]NOT met[/]'}: {text}")
            console.print()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    document = {
        "settings": settings,
        "random_init": RANDOM_INIT,
        "mixes": [asdict(m) for m in mixes],
        "results": [asdict(r) for r in results],
    }
    (args.out / "llm_batching.json").write_text(json.dumps(document, indent=2))
    plot(args.out / "llm_batching.png", results)
    console.print(f"wrote {args.out / 'llm_batching.json'} and {args.out / 'llm_batching.png'}")


def plot(path: Path, results: list[Result]) -> None:
    """Grouped bars: output tokens/s and TTFT p99 of each config, per mix (and concurrency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.mix, r.concurrency) for r in results))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    width = 0.8 / len(CONFIGS)
    for axis, key, label in ((axes[0], "tokens_per_s", "output tokens/s"), (axes[1], "ttft_p99_ms", "TTFT p99 (ms)")):
        for i, config in enumerate(CONFIGS):
            values = [next(getattr(r, key) for r in results if (r.mix, r.concurrency) == g and r.config == config)
                      for g in groups]  # fmt: skip
            offset = (i - (len(CONFIGS) - 1) / 2) * width
            bars = axis.bar([x + offset for x in range(len(groups))], values, width, label=config)
            axis.bar_label(bars, fmt="%.0f", fontsize=7)
        axis.set_xticks(range(len(groups)), [f"{mix}\nc={level}" for mix, level in groups])
        axis.set_ylabel(label)
        axis.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("throughput (higher is better)")
    axes[1].set_title("time to first text, p99 (lower is better)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 requests, outputs ≤ 64 tokens (a smoke check)")
    parser.add_argument("--requests", type=int, help="requests per mix (default 96, 24 with --quick)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="concurrent clients (one or more)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and output lengths")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of static and inflight per mix, alternating; the median counts"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "llm_batching")
    args = parser.parse_args()
    args.requests = args.requests or (24 if args.quick else 96)
    args.repeat = 1 if args.quick else max(1, args.repeat)
    mixes = QUICK_MIXES if args.quick else MIXES
    console = Console()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        spec_path = Path(scratch) / "llm_batching.yaml"
        capacity, longest = max(args.concurrency), max(m.longest for m in mixes)
        spec_path.write_text(yaml.safe_dump(spec(capacity, longest), sort_keys=False))
        with console.status("building the three models"):
            built = build_repository(load_spec(spec_path), Path(scratch) / "dist", cache_dir=Path(scratch) / "cache")
        server = TritonServer(built.path, endpoints=Endpoints.allocate())
        with console.status("starting Triton"):
            server.start()
        try:
            results = run_all(
                server.endpoints.grpc_url, mixes, args.requests, args.concurrency, args.seed, console, args.repeat
            )
        finally:
            server.stop()
    report(console, results, mixes, args)
    console.print(f"total {time.perf_counter() - started:.0f} s")
    errors = [e for r in results for e in r.errors]
    if errors:
        console.print(f"[red]{len(errors)} request(s) failed:[/]")
        for error in errors:  # first lines; the JSON has them whole
            console.print(f"  {error.splitlines()[0]}", markup=False)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
