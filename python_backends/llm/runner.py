"""The LLM engine's model runner: the forward passes over one shared KV cache, and sampling.

It executes what the scheduler planned and nothing else: a prefill runs one sequence's prompt
alone (batch 1, exactly what ``generate()`` does for that prompt); a decode advances every
running sequence by one token in **one batched forward pass** over the shared cache — per layer
one ``[batch, heads, columns, head_dim]`` tensor in which every row is right-aligned at the last
column and left-padded, with an attention mask that hides the padding and per-row position ids.
Rows live in slots of per-layer buffers with spare room (``kv_cache.py``); when rows leave,
padding no row needs any more is trimmed. Imports torch and transformers, never Triton.

Example:
    >>> runner = Runner(model, device="cpu", kv=kv_cache_module)
    >>> token, cache = runner.prefill(sequence)
    >>> runner.merge(cache)            # the sequence is now the cache's last row
    >>> tokens = runner.decode(rows)   # one token per row, in row order
"""

from __future__ import annotations

from typing import Any

import torch


class Runner:
    """Owns the model's passes and the shared cache (``columns`` wide, one row per running sequence)."""

    def __init__(self, model: Any, *, device: str, kv: Any):
        self.model = model
        self.device = torch.device(device)
        self.kv = kv  # the kv_cache module, as the engine loaded it
        self.cache: Any = None  # a DynamicCache shared by the running rows, or None
        self.columns = 0

    def reset(self) -> None:
        self.cache, self.columns = None, 0

    def prefill(self, seq: Any) -> tuple[int | None, Any]:
        """Run ``seq``'s prompt (plus its tokens from before a preemption) alone.

        Returns the first token sampled (None when the sequence was readmitted after a
        preemption: its newest token is already known, and the next decode feeds it) and the
        sequence's own cache, for :meth:`merge`.
        """
        from transformers import DynamicCache

        fed = seq.tokens if not seq.generated else seq.tokens[:-1]
        ids = torch.tensor([fed], device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        token = None if seq.generated else sample(out.logits[0, -1, :].float(), seq.params, seq.generator)
        return token, out.past_key_values

    def decode(self, rows: list[Any]) -> list[int]:
        """Advance every row by one token in one batched forward pass; the tokens, in row order."""
        columns = self.columns
        lengths = torch.tensor([s.cached for s in rows], device=self.device)
        ids = torch.tensor([[s.generated[-1] if s.generated else s.prompt_ids[-1]] for s in rows], device=self.device)
        positions = lengths.unsqueeze(1)
        col = torch.arange(columns + 1, device=self.device).unsqueeze(0)
        mask = (col >= (columns - lengths).unsqueeze(1)).long()
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=self.cache, use_cache=True
        )
        self.cache = out.past_key_values
        self.columns = columns + 1
        logits = out.logits[:, -1, :]
        # One device->host transfer for every greedy row (a per-row .item() is a GPU sync each).
        greedy = logits.argmax(dim=-1).tolist()
        return [
            greedy[i] if seq.params.greedy else sample(logits[i].float(), seq.params, seq.generator)
            for i, seq in enumerate(rows)
        ]

    def merge(self, cache: Any) -> None:
        """Append a prefilled sequence's cache as a new last row, left-padding whichever side is shorter."""
        length = cache.get_seq_length()
        slot = self.kv.slot_layer()
        if self.cache is None:
            for layer in cache.layers:
                if type(layer) is slot.__mro__[1]:  # a plain DynamicLayer: same state, slot buffers
                    layer.__class__ = slot
                    layer.adopt()
            self.cache, self.columns = cache, length
            return
        columns = max(self.columns, length)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            if isinstance(mine, slot):
                mine.add_row(theirs.keys, theirs.values)
            else:  # e.g. a sliding-window layer: rebuild by concatenation
                mine.keys = torch.cat([self.kv.left_pad(mine.keys, columns), self.kv.left_pad(theirs.keys, columns)], 0)
                mine.values = torch.cat(
                    [self.kv.left_pad(mine.values, columns), self.kv.left_pad(theirs.values, columns)], 0
                )
        self.columns = columns

    def remove_rows(self, rows: list[Any], indices: list[int]) -> list[int]:
        """Drop the rows at ``indices`` of ``rows`` (the running sequences, in row order); the last
        rows move into the holes. Returns the new order (row ``i`` is the old ``order[i]``)."""
        order = self.kv.swap_remove_order(len(rows), indices)
        if not order:
            self.reset()
            return order
        columns = max(rows[i].cached for i in order)
        trim = self.columns - columns
        moves = [(slot, old) for slot, old in enumerate(order) if slot != old]
        slot_layer, index = self.kv.slot_layer(), None
        for layer in self.cache.layers:
            if isinstance(layer, slot_layer):
                layer.remove_rows(moves, len(order), trim)
            else:
                index = torch.tensor(order, device=self.device) if index is None else index
                layer.keys = layer.keys.index_select(0, index)[:, :, trim:, :]
                layer.values = layer.values.index_select(0, index)[:, :, trim:, :]
        self.columns = columns
        return order


def sample(logits: torch.Tensor, params: Any, generator: torch.Generator | None) -> int:
    """One token from a row's logits under ``params`` (greedy, or temperature / top-k / top-p)."""
    if params.greedy:
        return int(torch.argmax(logits).item())
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1])).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(ordered, dim=-1) - ordered > params.top_p
        ordered = ordered.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator).item())
