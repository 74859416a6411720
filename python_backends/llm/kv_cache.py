"""The shared KV cache of the LLM engine: rows in slots of per-layer buffers with spare room.

transformers' ``DynamicCache`` keeps one ``[batch, heads, columns, head_dim]`` tensor per layer
and concatenates on every update; the engine's rows come and go every step, so it would copy
the whole cache several times a step. :func:`slot_layer` gives a ``DynamicLayer`` subclass that
the engine installs on the cache of its first row; :func:`swap_remove_order` says which rows
move where when rows leave. Imports only torch and transformers.

Example:
    >>> swap_remove_order(5, [1])
    [0, 4, 2, 3]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_SLOT_CLASS: list[type] = []


def slot_layer() -> type:
    """A transformers ``DynamicLayer`` whose rows live in slots of a buffer with spare room.

    ``DynamicLayer.update`` concatenates, i.e. reallocates and copies the whole cache of every
    layer at every step, and merging or dropping a row copied it all once more. Here each layer
    keeps ``[row slots, heads, column capacity, head_dim]`` buffers and exposes ``keys`` /
    ``values`` as the view ``[:rows, :, start:end]``:

    - a decode step writes one column at ``end`` (the buffer grows by half when full);
    - a new row goes into the next free slot, left-padded with zeros (the view widens to the
      left in place when the new row is longer and there is room);
    - a removed row's slot is refilled by moving the last row into it (one row copied, not the
      cache) and padding no row needs any more is trimmed by moving ``start``.

    Padding is always zeros, never stale memory: masked attention scores are ``-inf``, but a
    stale NaN in ``values`` would still poison ``0 × NaN``. If anything else replaces
    ``keys``/``values``, the next operation adopts them into a fresh buffer.
    """
    if not _SLOT_CLASS:
        from transformers.cache_utils import DynamicLayer

        class SlotLayer(DynamicLayer):  # type: ignore[misc,valid-type]
            _kb: torch.Tensor
            _vb: torch.Tensor
            _rows = _start = _end = 0
            _view: torch.Tensor | None = None

            def adopt(self) -> None:
                """Take the current ``keys``/``values`` into slot buffers."""
                rows, used = self.keys.shape[0], self.keys.shape[-2]
                self._rows, self._start, self._end = rows, 0, 0
                self._kb, self._vb = self.keys, self.values  # read by _regrow as the current view
                self._regrow(max(rows, 4), used, left_pad=0, current=(self.keys, self.values))

            def owns_view(self) -> bool:
                return self._view is not None and self._view is self.keys

            def _regrow(
                self, row_slots: int, columns: int, left_pad: int, current: tuple[torch.Tensor, torch.Tensor]
            ) -> None:
                used = current[0].shape[-2]
                capacity = columns + columns // 2 + 16
                buffers = []
                for tensor in current:
                    grown = tensor.new_zeros((row_slots, tensor.shape[1], capacity, tensor.shape[-1]))
                    grown[: self._rows, :, left_pad : left_pad + used] = tensor
                    buffers.append(grown)
                self._kb, self._vb = buffers
                self._start, self._end = 0, left_pad + used
                self._set_views()

            def _set_views(self) -> None:
                self.keys = self._kb[: self._rows, :, self._start : self._end]
                self.values = self._vb[: self._rows, :, self._start : self._end]
                self._view = self.keys

            def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                if not self.is_initialized:
                    return super().update(key_states, value_states, *args, **kwargs)
                if not self.owns_view():
                    self.adopt()
                new = key_states.shape[-2]
                if self._end + new > self._kb.shape[-2]:
                    self._regrow(self._kb.shape[0], self._end - self._start + new, 0, (self.keys, self.values))
                self._kb[: self._rows, :, self._end : self._end + new] = key_states
                self._vb[: self._rows, :, self._end : self._end + new] = value_states
                self._end += new
                self._set_views()
                return self.keys, self.values

            def add_row(self, keys: torch.Tensor, values: torch.Tensor) -> None:
                """Append one sequence's ``[1, heads, length, head_dim]`` cache as the last row."""
                if not self.owns_view():
                    self.adopt()
                width, length = self._end - self._start, keys.shape[-2]
                columns = max(width, length)
                if self._rows == self._kb.shape[0] or self._end - columns < 0:
                    slots = self._kb.shape[0] * (2 if self._rows == self._kb.shape[0] else 1)
                    self._regrow(slots, columns, columns - width, (self.keys, self.values))
                elif columns > width:  # widen to the left in place; those columns may hold stale rows
                    self._kb[: self._rows, :, self._end - columns : self._start] = 0
                    self._vb[: self._rows, :, self._end - columns : self._start] = 0
                    self._start = self._end - columns
                row = self._rows
                for buffer, tensor in ((self._kb, keys), (self._vb, values)):
                    buffer[row, :, self._start : self._end - length] = 0
                    buffer[row, :, self._end - length : self._end] = tensor[0]
                self._rows += 1
                self._set_views()

            def remove_rows(self, moves: list[tuple[int, int]], rows: int, trim: int) -> None:
                """Refill slots (``moves``: ``(slot, from_slot)``), keep ``rows`` rows, drop ``trim`` columns."""
                if not self.owns_view():
                    self.adopt()
                columns = slice(self._start, self._end)
                for slot, source in moves:
                    self._kb[slot, :, columns] = self._kb[source, :, columns]
                    self._vb[slot, :, columns] = self._vb[source, :, columns]
                self._rows = rows
                self._start += trim
                self._set_views()

        _SLOT_CLASS.append(SlotLayer)
    return _SLOT_CLASS[0]


def swap_remove_order(rows: int, remove: list[int]) -> list[int]:
    """Rows left after removing ``remove``, as old row indices: each hole is refilled by the last row.

    >>> swap_remove_order(5, [1])
    [0, 4, 2, 3]
    >>> swap_remove_order(4, [0, 1])
    [2, 3]

    A refilling row always comes from beyond the new row count, so the copies never overlap.
    """
    order = list(range(rows))
    for i in sorted(set(remove), reverse=True):
        order[i] = order[-1]
        order.pop()
    return order


def left_pad(x: torch.Tensor, columns: int) -> torch.Tensor:
    missing = columns - x.shape[-2]
    return F.pad(x, (0, 0, missing, 0)) if missing else x
