"""Tokenizers for the LLM engine, and detokenizers that stream one sequence's text.

Loaded by ``engine.py`` from the same directory (in Triton's stub that is the model's version
directory). Imports only the standard library and, for :class:`HFTokenizer`, transformers.

Example:
    >>> detok = ByteTokenizer().detokenizer()
    >>> for token in "€!".encode():
    ...     detok.push(token)
    >>> detok.text
    '€!'
"""

from __future__ import annotations

import codecs
from collections.abc import Callable


class ByteTokenizer:
    """UTF-8 bytes as token ids 0–255, plus BOS 256, EOS 257 and PAD 258 (vocab ≥ 259).

    For ``random_init`` models, which have no trained tokenizer: any text round-trips exactly.
    """

    bos_token_id = 256
    eos_token_id = 257
    pad_token_id = 258
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        return [self.bos_token_id, *text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def detokenizer(self) -> ByteDetokenizer:
        return ByteDetokenizer()


class ByteDetokenizer:
    """Streams one sequence's text from byte tokens: an incremental UTF-8 decoder, O(1) a token.

    ``text`` holds only what later tokens cannot change: an unfinished but valid UTF-8 sequence
    waits; invalid bytes become U+FFFD at once (holding those back would silence a stream until
    its end). Exactly ``ByteTokenizer.decode`` of all tokens once :meth:`finish` ran.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def push(self, token: int) -> None:
        if token < 256:
            self.text += self._decoder.decode(bytes((token,)))

    def finish(self) -> str:
        self.text += self._decoder.decode(b"", final=True)
        return self.text


class HFTokenizer:
    """A transformers tokenizer loaded from a local directory."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.eos_token_id = self._tok.eos_token_id
        self.pad_token_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        # No clean-up of spaces (" ." -> "."): it can change text that was already streamed when
        # a later token arrives, so streamed and final text could disagree (vLLM leaves it off too).
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def detokenizer(self) -> HFDetokenizer:
        return HFDetokenizer(self.decode)


class HFDetokenizer:
    """Streams one sequence's text by decoding a short window per token, not the whole text.

    The window starts at the previous chunk's first token (vLLM's prefix/read offsets): the new
    text is ``decode(window)`` minus ``decode(window without the new tokens)``, so a tokenizer that
    renders a chunk's first token differently (SentencePiece drops its leading space) still gives
    the right difference. New text ending in U+FFFD (half a byte-fallback character) waits for
    the next token. Should a window ever decode to something its shorter self is not a prefix of,
    this sequence falls back to decoding everything each token (exact, O(n) a token). The
    concatenated text equals ``HFTokenizer.decode`` of all tokens for byte-level BPE, WordPiece and
    SentencePiece-style tokenizers (fuzzed in the unit tests).
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = self._read = 0
        self._windowed = True
        self.text = ""

    def push(self, token: int) -> None:
        self._ids.append(token)
        if not self._windowed:
            self.text = self._settled(self._decode(self._ids))
            return
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if not after.startswith(before):
            self._windowed = False
            self.text = self._settled(self._decode(self._ids))
        elif len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)

    def finish(self) -> str:
        if not self._windowed:
            self.text = self._decode(self._ids)
        else:
            before = self._decode(self._ids[self._prefix : self._read])
            self.text += self._decode(self._ids[self._prefix :])[len(before) :]
        return self.text

    def _settled(self, text: str) -> str:
        """``text`` without a trailing U+FFFD run that came from the last four tokens."""
        run = len(text) - len(text.rstrip("\ufffd"))
        if not run:
            return text
        earlier = self._decode(self._ids[:-4]) if len(self._ids) > 4 else ""
        return text[: max(len(text) - run, min(len(earlier), len(text)))]


def load_tokenizer(kind: str, path: str) -> ByteTokenizer | HFTokenizer:
    """``kind`` is ``"byte"`` or ``"hf"`` (a tokenizer directory at ``path``)."""
    return ByteTokenizer() if kind == "byte" else HFTokenizer(path)
