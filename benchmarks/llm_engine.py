"""The LLM engine in-process, on CPU or GPU: token equality with generate() and offline throughput.

Needs only torch and transformers (no Triton, no tritonkit install), so it also runs on a GPU
host that has nothing else: it loads ``python_backends/llm/engine.py`` from this checkout.

1. **Equality**: greedy output of every prompt, decoded in one in-flight batch, against
   ``generate()`` run on that prompt alone, on the same device. Prints how many match.
2. **Throughput** (all requests queued at t=0, heavy-tailed output lengths: 75% in 8–32,
   25% in 160–256, ``ignore_eos``): in-flight engine vs static batches (``generate()`` on
   ``--batch`` prompts at a time, each batch as long as its longest request) vs one request at a
   time (the engine with ``max_running=1``). Prints output tokens/s and the ratios.

    python benchmarks/llm_engine.py [--device cuda] [--requests 48] [--batch 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("llm_engine_bench", ROOT / "python_backends" / "llm" / "engine.py")
assert _spec is not None and _spec.loader is not None
engine = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = engine
_spec.loader.exec_module(engine)
TOK = engine.ByteTokenizer()


class _Sink:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.done = threading.Event()

    def emit(self, event: Any) -> None:
        self.tokens.extend(event.tokens)
        if event.kind == "final":
            self.done.set()

    def cancelled(self) -> bool:
        return False


def make_model(layers: int, hidden: int, device: str, dtype: torch.dtype) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=259,
        n_positions=1024,
        n_embd=hidden,
        n_layer=layers,
        n_head=max(1, hidden // 64),
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval().to(device=device, dtype=dtype)


def workload(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        prompt = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(15, 63)))
        length = rng.randint(8, 32) if rng.random() < 0.75 else rng.randint(160, 256)
        items.append((prompt, length))
    return items


def run_engine(model: Any, items: list[tuple[str, int]], device: str, max_running: int) -> tuple[float, list[_Sink]]:
    eng = engine.Engine(model, TOK, engine.Budgets(max_running=max_running, max_queue=len(items) + 1), device=device)
    eng.start()
    sinks = []
    start = time.perf_counter()
    for prompt, n in items:
        sink = _Sink()
        sinks.append(sink)
        params = engine.SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        eng.submit(engine.Sequence(id=prompt, prompt=prompt, params=params, sink=sink))
    for sink in sinks:
        sink.done.wait(3600)
    elapsed = time.perf_counter() - start
    eng.stop()
    return elapsed, sinks


@torch.inference_mode()
def run_static(model: Any, items: list[tuple[str, int]], device: str, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        group = items[i : i + batch]
        ids = [TOK.encode(p) for p, _ in group]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[TOK.pad_token_id] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max(n for _, n in group),
            do_sample=False,
            pad_token_id=TOK.pad_token_id,
            eos_token_id=None,
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def reference(model: Any, prompt: str, n: int, device: str) -> list[int]:
    ids = torch.tensor([TOK.encode(prompt)], device=device)
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=TOK.pad_token_id, eos_token_id=None)
    return out[0, ids.shape[1] :].tolist()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16, help="static batch size = in-flight max_running")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    model = make_model(args.layers, args.hidden, args.device, dtype)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}), torch {torch.__version__}, {args.dtype}, gpt2 {args.layers}x{args.hidden}")

    items = workload(args.requests, args.seed)
    check = items[: min(16, len(items))]
    _, sinks = run_engine(model, check, args.device, args.batch)
    same = sum(s.tokens == reference(model, p, n, args.device) for (p, n), s in zip(check, sinks))
    print(f"equality: {same}/{len(check)} prompts token-identical to generate() alone")

    tokens = sum(n for _, n in items)
    run_engine(model, items[:4], args.device, args.batch)  # warm-up (kernels, allocator)
    inflight, _ = run_engine(model, items, args.device, args.batch)
    static = run_static(model, items, args.device, args.batch)
    sequential, _ = run_engine(model, items, args.device, 1)
    print(f"{'config':<12}{'seconds':>10}{'tokens/s':>12}")
    for label, seconds in (("sequential", sequential), ("static", static), ("in-flight", inflight)):
        print(f"{label:<12}{seconds:>10.2f}{tokens / seconds:>12.0f}")
    print(f"in-flight / static {static / inflight:.2f}x, in-flight / sequential {sequential / inflight:.2f}x")
    return 0 if same == len(check) else 1


if __name__ == "__main__":
    sys.exit(main())
