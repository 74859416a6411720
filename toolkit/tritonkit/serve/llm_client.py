"""Client side of ``kind: llm`` models: streamed generation over gRPC, with timings.

Speaks the Triton vLLM backend's contract, so it works against tritonkit's LLM backend and
the vLLM backend alike. One :class:`LlmStream` is one gRPC bidirectional stream carrying one
request at a time (tritonclient reports a per-request error without its request id, so a
stream per concurrent request is what keeps errors attributable); open several for
concurrency.

Cancelling: gRPC clients cancel with ``LlmStream.cancel()`` (``stop_stream(cancel_requests=
True)``), which the server sees as ``is_cancelled()`` within one engine step. HTTP clients
cannot cancel a generation: Triton's HTTP ``/generate_stream`` (SSE) and ``/infer`` have no
cancel call, and closing the connection does not cancel the request server-side in Triton
2.51, so the sequence runs to ``max_tokens`` — keep ``max_tokens`` small for HTTP clients.

Example:
    >>> result = generate("127.0.0.1:8001", "tiny", "Hello", {"max_tokens": 8, "temperature": 0})
    >>> result.text, result.finish_reason, result.ttft
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonkit.errors import ServerError


@dataclass
class Generation:
    """What one request produced, with client-side timings (``time.perf_counter`` seconds)."""

    prompt: str
    sent_at: float
    chunks: list[str] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)  # tokens each streamed piece stands for
    finish_reason: str | None = None
    error: str | None = None
    finals: int = 0
    output_tokens: int = 0
    done_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def ttft(self) -> float | None:
        """Time to the first piece of text (to the answer, for a non-streamed request)."""
        return self.chunk_times[0] - self.sent_at if self.chunk_times else None

    @property
    def inter_token(self) -> list[float]:
        """Gaps between consecutive streamed responses."""
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]

    @property
    def per_token(self) -> list[float]:
        """Time per output token after the first piece, as the engine's TPOT histogram observes it:
        a piece that carries ``n`` tokens (the server coalesces when its sender falls behind)
        stands for ``n`` gaps of ``1/n`` of the time since the previous piece; the tokens of the
        first piece count towards TTFT only. Empty when the server did not report token counts."""
        if len(self.chunk_tokens) != len(self.chunk_times):
            return []
        gaps: list[float] = []
        for gap, tokens in zip(self.inter_token, self.chunk_tokens[1:]):
            gaps.extend([gap / tokens] * tokens)
        return gaps


class LlmStream:
    """A gRPC stream to one llm model; one request at a time (see the module docstring)."""

    #: Shape of every input tensor: ``(1,)`` for the vLLM contract (``max_batch_size: 0``);
    #: a subclass sets ``(1, 1)`` for a model with ``max_batch_size > 0`` (``mode: static``).
    shape: tuple[int, ...] = (1,)

    def __init__(self, url: str, model: str):
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url = url
        self.model = model
        self._client = grpcclient.InferenceServerClient(url)
        self._done = threading.Event()
        self._current: Generation | None = None
        self._on_text: Callable[[str], None] | None = None
        self._client.start_stream(callback=self._callback)

    def send(
        self,
        prompt: str,
        params: dict[str, Any] | None = None,
        *,
        stream: bool = True,
        exclude_input: bool = True,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Start a request; returns its (growing) :class:`Generation` at once. ``wait()`` for it."""
        if self._current is not None and not self._done.is_set():
            raise RuntimeError("this stream already has a request in flight; open one LlmStream per request")
        inputs = []
        for name, value, dtype in (
            ("text_input", np.array([prompt.encode("utf-8")], dtype=np.object_), "BYTES"),
            ("stream", np.array([stream]), "BOOL"),
            ("sampling_parameters", np.array([json.dumps(params or {}).encode()], dtype=np.object_), "BYTES"),
            ("exclude_input_in_output", np.array([exclude_input]), "BOOL"),
            ("return_finish_reason", np.array([True]), "BOOL"),
            ("return_num_output_tokens", np.array([True]), "BOOL"),
        ):
            tensor = self._grpc.InferInput(name, list(self.shape), dtype)
            tensor.set_data_from_numpy(value.reshape(self.shape))
            inputs.append(tensor)
        self._done.clear()
        self._on_text = on_text
        self._current = Generation(prompt=prompt, sent_at=time.perf_counter())
        self._client.async_stream_infer(self.model, inputs, enable_empty_final_response=True)
        return self._current

    def wait(self, timeout: float = 300.0) -> Generation:
        """Block until the current request's final response (or error) arrives."""
        if not self._done.wait(timeout):
            raise ServerError(f"no final response from '{self.model}' within {timeout:.0f}s", hint="raise --timeout")
        assert self._current is not None
        return self._current

    def cancel(self) -> None:
        """Cancel the request in flight (the stream cannot be reused afterwards)."""
        self._client.stop_stream(cancel_requests=True)

    def close(self) -> None:
        try:
            self._client.stop_stream()
        finally:
            self._client.close()

    def __enter__(self) -> LlmStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _callback(self, result: Any, error: Any) -> None:
        now = time.perf_counter()
        current = self._current
        if current is None:
            return
        if error is not None:
            current.error = error.message() if hasattr(error, "message") else str(error)
            current.finals += 1
            current.done_at = now
            self._done.set()
            return
        response = result.get_response()
        final = response.parameters["triton_final_response"].bool_param
        if any(o.name == "text_output" for o in response.outputs):
            text = b"".join(result.as_numpy("text_output").reshape(-1)).decode("utf-8", errors="replace")
            current.chunks.append(text)
            current.chunk_times.append(now)
            if self._on_text is not None:
                self._on_text(text)
            counts = result.as_numpy("num_output_tokens")
            if counts is not None:
                current.output_tokens += int(counts.reshape(-1)[0])
                current.chunk_tokens.append(int(counts.reshape(-1)[0]))
        if final:
            reason = result.as_numpy("finish_reason")
            if reason is not None:
                current.finish_reason = reason.reshape(-1)[0].decode()
            current.finals += 1
            current.done_at = now
            self._done.set()


def check_llm(url: str, model: str) -> None:
    """Fail with one clear line unless ``model`` is a ready, decoupled text-generation model.

    Raises:
        ServerError: unreachable server, unknown or unloaded model (with a suggestion), or a
            model without the vLLM-style contract (decoupled, ``text_input`` → ``text_output``).
    """
    from tritonkit.serve.client import connect, model_info

    info = model_info(connect(url, "grpc"), model, url, "grpc")
    inputs = {i["name"] for i in info.metadata.get("inputs", [])}
    outputs = {o["name"] for o in info.metadata.get("outputs", [])}
    decoupled = info.config.get("model_transaction_policy", {}).get("decoupled", False)
    if "text_input" not in inputs or "text_output" not in outputs or not decoupled:
        raise ServerError(
            f"'{model}' is not a text-generation model (needs decoupled, text_input -> text_output)",
            hint="pick a model of kind llm (or a Triton vLLM backend model)",
        )


def generate(
    url: str,
    model: str,
    prompt: str,
    params: dict[str, Any] | None = None,
    *,
    stream: bool = True,
    exclude_input: bool = True,
    on_text: Callable[[str], None] | None = None,
    timeout: float = 300.0,
) -> Generation:
    """Send one prompt and wait for the whole answer (``on_text`` sees each streamed piece)."""
    with LlmStream(url, model) as conn:
        conn.send(prompt, params, stream=stream, exclude_input=exclude_input, on_text=on_text)
        return conn.wait(timeout)


__all__ = ["Generation", "LlmStream", "check_llm", "generate"]
