"""``mode: static``: one ``generate()`` over a batch Triton's dynamic batcher formed (a benchmark baseline).

Greedy only; every request of the batch is answered when the longest one finishes — what
in-flight batching is measured against (``benchmarks/llm_batching.py``). Imports torch, never
Triton: the backend (``model.py``) reads the requests and sends the events this returns.

Example:
    >>> check(params, prompt_ids, max_positions)          # ParameterError when it cannot run
    >>> events = generate(model, tokenizer, "cpu", [(sink, prompt_ids, params)], sequences)
"""

from __future__ import annotations

import time
from typing import Any

import torch


def check(params: Any, prompt_ids: list[int], max_positions: int, error: type[Exception]) -> None:
    """Raise ``error`` (the engine's ParameterError) for a request the static mode cannot run."""
    if not params.greedy:
        raise error("mode static (a benchmark baseline) is greedy only: set temperature 0")
    if len(prompt_ids) + params.max_tokens > max_positions:
        raise error(
            f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the model's "
            f"{max_positions} positions"
        )


def generate(model: Any, tokenizer: Any, device: Any, batch: list[tuple[Any, list[int], Any]], sequences: Any) -> list:
    """One left-padded ``generate()`` over ``batch`` (sink, prompt ids, params); one final
    ``sequences.Event`` per request, in order."""
    started = time.perf_counter()
    width = max(len(ids) for _, ids, _ in batch)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(i)) + i for _, i, _ in batch], device=device)
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for _, i, _ in batch], device=device)
    longest = max(p.max_tokens for _, _, p in batch)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=longest,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=None if all(p.ignore_eos for _, _, p in batch) else tokenizer.eos_token_id,
        )
    events = []
    for row, (sink, prompt_ids, params) in enumerate(batch):
        new = out[row, width:].tolist()[: params.max_tokens]
        reason = "length"
        eos = tokenizer.eos_token_id
        if not params.ignore_eos and eos in new:
            new, reason = new[: new.index(eos) + 1], "stop"
        seq = sequences.Sequence(id="", prompt=sink.prompt, params=params, sink=sink, arrival=started)
        seq.prompt_ids, seq.generated = prompt_ids, new
        seq.first_token_at = time.perf_counter()
        text = tokenizer.decode(new)
        events.append(
            sequences.Event(seq, "final", text=text, tokens=tuple(new), finish_reason=reason, time=seq.first_token_at)
        )
    return events
