"""Triton Python backend for ``kind: llm``: the vLLM backend's client contract over tritonkit's engine.

tritonkit copies this file and the engine (``engine.py`` and the modules it loads beside it:
``sequences.py``, ``scheduler.py``, ``runner.py``, ``output.py``, ``static.py``, ``tokens.py``,
``kv_cache.py``) into every LLM model's version directory, next to ``model.json`` (engine
arguments) and ``hf/`` (the transformers model, and its tokenizer), so the repository is
self-contained. It needs Triton
≥ 23.10 (decoupled Python models with ``is_cancelled``, ``TritonError`` codes) — 24.08 or newer
for the histogram metrics — and ``torch`` and ``transformers`` ≥ 5 in the Python environment
the stub runs in.

Contract (as the Triton vLLM backend, so its clients, ensembles and BLS code work unchanged):
decoupled, ``max_batch_size: 0``; inputs ``text_input`` (STRING), optional ``stream`` (BOOL),
``sampling_parameters`` (JSON STRING), ``exclude_input_in_output`` (BOOL) and
``return_finish_reason`` / ``return_num_input_tokens`` / ``return_num_output_tokens`` (BOOL);
outputs ``text_output``, and ``finish_reason``, ``num_input_tokens``, ``num_output_tokens`` when
asked for. Streaming sends one response per new piece of text, the last one flagged FINAL;
otherwise one FINAL response with the whole text. Errors, cancellation and unload each end a
request with exactly one FINAL error response; a response sender is never used after that.

``mode: static`` (a benchmark baseline, not for production) instead takes a batch from Triton's
dynamic batcher, runs ``generate()`` on it (greedy only) and answers every request when the
longest one finishes.
"""

import importlib.util
import json
import os
import queue
import sys
import threading
import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("tritonkit_llm_engine", os.path.join(_HERE, "engine.py"))
engine = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = engine  # dataclasses look their module up there
_spec.loader.exec_module(engine)

_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
_TPOT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
# The reason labels of tritonkit_llm_request_failure_total (cancellations are the client's doing,
# not failures: vllm:request_success_total{finish_reason="cancelled"} counts them).
_FAILURE_REASONS = ("overloaded", "invalid", "error")


class _Sink:
    """One request: its response sender and what it asked for."""

    def __init__(self, model, request, sender, prompt):
        self.sender = sender
        self.request = request
        self.stream = _flag(request, "stream")
        self.exclude_input = _flag(request, "exclude_input_in_output")
        # As the vLLM backend: the extra outputs are sent when their return_* flag is set.
        self.extra = {
            name
            for name, flag in (
                ("finish_reason", "return_finish_reason"),
                ("num_input_tokens", "return_num_input_tokens"),
                ("num_output_tokens", "return_num_output_tokens"),
            )
            if _flag(request, flag)
        }
        self.prompt = prompt
        self.text = []
        self.tokens_sent = 0
        self.last_token_at = None
        self.closed = False
        self._outbox = model.outbox

    def emit(self, event):
        self._outbox.put(event)

    def cancelled(self):
        return self.sender.is_cancelled()


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "model.json")) as handle:
            self.settings = json.load(handle)
        self.static = self.settings.get("mode", "inflight") == "static"
        decoupled = pb_utils.using_decoupled_model_transaction_policy(self.config)
        if not decoupled:
            raise pb_utils.TritonModelException(f"{self.name}: an llm model needs model_transaction_policy decoupled")
        if self.settings.get("threads"):
            torch.set_num_threads(int(self.settings["threads"]))
        self.device = _device(self.settings.get("device", "auto"), args)
        from transformers import AutoModelForCausalLM

        hf_dir = os.path.join(version_dir, self.settings.get("model", "hf"))
        dtype = getattr(torch, self.settings.get("dtype", "float32"))
        self.model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()
        tokenizer_dir = os.path.join(version_dir, self.settings.get("tokenizer_path", "hf"))
        self.tokenizer = engine.load_tokenizer(self.settings.get("tokenizer", "hf"), tokenizer_dir)
        self.default_max_tokens = int(self.settings.get("default_max_tokens", 16))
        budgets = engine.Budgets(**self.settings.get("scheduler", {}))
        self.engine = engine.Engine(self.model, self.tokenizer, budgets, device=str(self.device))
        self._metrics(args)
        self.outbox = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, name="llm-sender", daemon=True)
        self._sender.start()
        if not self.static:
            self.engine.start()
        pb_utils.Logger.log_info(
            f"{self.name}: {type(self.model).__name__} on {self.device}, mode {self.settings.get('mode', 'inflight')}, "
            f"{budgets}"
        )

    # ------------------------------------------------------------------ requests

    def execute(self, requests):
        if self.static:
            self._execute_static(requests)
            return None
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt, params = self._read(request)
                sink = _Sink(self, request, sender, prompt)
                self.engine.submit(engine.Sequence(id=request.request_id(), prompt=prompt, params=params, sink=sink))
            except engine.QueueFull as exc:
                self._refuse(
                    sender,
                    f"{self.name} is overloaded: {exc}; retry later",
                    pb_utils.TritonError.UNAVAILABLE,
                    "overloaded",
                )
            except (engine.ParameterError, ValueError) as exc:
                self._refuse(sender, f"{self.name}: {exc}", pb_utils.TritonError.INVALID_ARG, "invalid")
            except engine.EngineFailed as exc:
                self._refuse(sender, f"{self.name}: {exc}; reload the model", pb_utils.TritonError.INTERNAL, "error")
        return None

    def _refuse(self, sender, message, code, reason):
        """End a request with an error response, counted under ``reason``: Triton counts a
        decoupled request that ended in an error response as a success, so the engine counts
        the failures."""
        self.m_failure[reason].increment(1)
        _fail(sender, message, code)

    def _read(self, request):
        """The prompt and sampling parameters of one request (ParameterError / ValueError if bad)."""
        prompt = _text(request)
        return prompt, engine.SamplingParams.from_json(_string(request, "sampling_parameters"), self.default_max_tokens)

    def _execute_static(self, requests):
        """Baseline: one generate() over the whole batch; every answer when the longest ends (``static.py``)."""
        live = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                prompt, params = self._read(request)
                ids = self.tokenizer.encode(prompt)
                engine.static.check(params, ids, self.engine.max_positions, engine.ParameterError)
                live.append((_Sink(self, request, sender, prompt), ids, params))
            except (engine.ParameterError, ValueError) as exc:
                self._refuse(sender, f"{self.name}: {exc}", pb_utils.TritonError.INVALID_ARG, "invalid")
        if not live:
            return
        for event in engine.static.generate(self.model, self.tokenizer, self.device, live, engine):
            self.outbox.put(event)

    # ------------------------------------------------------------------ responses

    def _send_loop(self):
        """Sends every response and updates metrics, so the engine thread never waits on IPC."""
        last_gauges, shown = 0.0, (-1, -1)
        preemptions = 0
        reported_error = False
        while True:
            try:
                first = self.outbox.get(timeout=0.25)
            except queue.Empty:
                first = None
            events = [] if first is None else [first]
            while events and len(events) < 1024:  # whatever piled up while the last send ran
                try:
                    events.append(self.outbox.get_nowait())
                except queue.Empty:
                    break
            for event in _coalesce(events):
                if event is _STOP:
                    return
                try:
                    self._send(event)
                except Exception as exc:  # keep serving the others; Triton logs it
                    pb_utils.Logger.log_error(f"{self.name}: sending a response failed: {exc}")
            if self.engine.error is not None and not reported_error:
                reported_error = True
                pb_utils.Logger.log_error(f"{self.name}: the engine stopped: {self.engine.error!r}")
            # A gauge is read at scrape time, so it follows every admission and finish at once (a
            # short generation could otherwise start and end between two timed updates) and the
            # KV-cache fill at most 0.25 s late.
            now, stats = time.perf_counter(), self.engine.stats
            if now - last_gauges >= 0.25 or (stats.running, stats.waiting) != shown:
                last_gauges, shown = now, (stats.running, stats.waiting)
                self.m_running.set(stats.running)
                self.m_waiting.set(stats.waiting)
                self.m_kv.set(stats.kv_used / max(1, stats.kv_capacity))
                self.m_kv_tokens.set(stats.kv_used)
                if stats.preemptions > preemptions:
                    self.m_preempt.increment(stats.preemptions - preemptions)
                    preemptions = stats.preemptions

    def _send(self, event):
        seq = event.sequence
        sink = seq.sink
        if sink.closed:
            return  # never touch a sender after its final response
        final = event.kind == "final"
        if seq.first_token_at is not None and sink.last_token_at is None and event.tokens:
            self.m_ttft.observe(seq.first_token_at - seq.arrival)
            self.m_prompt.increment(len(seq.prompt_ids))
            sink.last_token_at = seq.first_token_at
        elif event.tokens and sink.last_token_at is not None:
            gap = max(0.0, event.time - sink.last_token_at) / len(event.tokens)
            for _ in event.tokens:  # a coalesced event stands for several tokens
                self.m_tpot.observe(gap)
            sink.last_token_at = event.time
        if event.tokens:
            self.m_generation.increment(len(event.tokens))
        if final:
            sink.closed = True
            self.m_success.get(event.finish_reason, self.m_success["error"]).increment(1)
            if event.finish_reason == "cancelled":
                _fail(sink.sender, event.error or "request cancelled", pb_utils.TritonError.CANCELLED)
                return
            if event.finish_reason == "error":
                self._refuse(sink.sender, event.error or "generation failed", pb_utils.TritonError.INTERNAL, "error")
                return
        if sink.stream:
            count = len(event.tokens)
            if not event.text and not final:
                sink.tokens_sent += count
                return  # held back (a possible stop string or half a character): nothing new to say
            text = event.text
            count += sink.tokens_sent
            sink.tokens_sent = 0
        else:
            sink.text.append(event.text)
            if not final:
                return
            text = "".join(sink.text)
            if not sink.exclude_input:
                text = sink.prompt + text
            count = len(seq.generated)
        outputs = [pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))]
        if "finish_reason" in sink.extra and final:
            outputs.append(pb_utils.Tensor("finish_reason", np.array([event.finish_reason.encode()], dtype=np.object_)))
        if "num_input_tokens" in sink.extra:
            outputs.append(pb_utils.Tensor("num_input_tokens", np.array([len(seq.prompt_ids)], dtype=np.uint32)))
        if "num_output_tokens" in sink.extra:
            outputs.append(pb_utils.Tensor("num_output_tokens", np.array([count], dtype=np.uint32)))
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        sink.sender.send(pb_utils.InferenceResponse(output_tensors=outputs), flags=flags)

    # ------------------------------------------------------------------ metrics

    def _metrics(self, args):
        # Labels unique to this stub process (see the onnxruntime backend: a reload would
        # otherwise share, then free, one Metric between old and new instance).
        labels = {
            "model": self.name,
            "version": str(args["model_version"]),
            "instance": f"{args['model_instance_name']}.{os.getpid()}",
        }
        F = pb_utils.MetricFamily
        self._families = {
            "prompt": F("vllm:prompt_tokens_total", "Number of prefill tokens processed.", F.COUNTER),
            "generation": F("vllm:generation_tokens_total", "Number of generation tokens processed.", F.COUNTER),
            "success": F("vllm:request_success_total", "Finished requests by finish reason.", F.COUNTER),
            "preempt": F("vllm:num_preemptions_total", "Sequences preempted (recomputed later).", F.COUNTER),
            "ttft": F("vllm:time_to_first_token_seconds", "Time to first token in seconds.", F.HISTOGRAM),
            "tpot": F("vllm:time_per_output_token_seconds", "Time per output token in seconds.", F.HISTOGRAM),
            "running": F("vllm:num_requests_running", "Sequences in the running batch.", F.GAUGE),
            "waiting": F("vllm:num_requests_waiting", "Sequences waiting to be admitted.", F.GAUGE),
            "kv": F("vllm:kv_cache_usage_perc", "Fraction of the KV-cache budget in use (0-1).", F.GAUGE),
            "kv_tokens": F("tritonkit_llm_kv_cache_tokens", "KV-cache slots in use (rows x columns).", F.GAUGE),
            "failure": F("tritonkit_llm_request_failure_total", "Requests ended with an error response.", F.COUNTER),
        }
        fam = self._families
        self.m_prompt = fam["prompt"].Metric(labels=labels)
        self.m_generation = fam["generation"].Metric(labels=labels)
        self.m_preempt = fam["preempt"].Metric(labels=labels)
        self.m_success = {
            reason: fam["success"].Metric(labels={**labels, "finish_reason": reason})
            for reason in ("stop", "length", "cancelled", "error")
        }
        self.m_ttft = fam["ttft"].Metric(labels=labels, buckets=_TTFT_BUCKETS)
        self.m_tpot = fam["tpot"].Metric(labels=labels, buckets=_TPOT_BUCKETS)
        self.m_running = fam["running"].Metric(labels=labels)
        self.m_waiting = fam["waiting"].Metric(labels=labels)
        self.m_kv = fam["kv"].Metric(labels=labels)
        self.m_kv_tokens = fam["kv_tokens"].Metric(labels=labels)
        self.m_failure = {
            reason: fam["failure"].Metric(labels={**labels, "reason": reason}) for reason in _FAILURE_REASONS
        }

    def finalize(self):
        self.engine.stop()
        self.outbox.put(_STOP)
        self._sender.join(timeout=10)


_STOP = object()


def _coalesce(events):
    """Merge queued events of one sequence into one (in order), so a sender that fell behind
    catches up with one response per sequence instead of one per token. A final event absorbs
    the sequence's pending tokens; ``_STOP`` keeps its place at the end."""
    merged = []
    open_token = {}  # sequence id -> index in merged of its last, still-mergeable token event
    for event in events:
        if event is _STOP:
            merged.append(event)
            continue
        key = id(event.sequence)
        index = open_token.get(key)
        if index is None:
            merged.append(event)
        else:
            earlier = merged[index]
            merged[index] = engine.Event(
                event.sequence,
                event.kind,
                text=earlier.text + event.text,
                tokens=earlier.tokens + event.tokens,
                finish_reason=event.finish_reason,
                error=event.error,
                time=event.time,
            )
        if event.kind == "token":
            open_token[key] = index if index is not None else len(merged) - 1
        else:
            open_token.pop(key, None)
    return merged


def _fail(sender, message, code):
    sender.send(
        pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)),
        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    )


def _string(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return ""
    value = tensor.as_numpy().reshape(-1)
    if value.size != 1:
        raise ValueError(f"input '{name}' must hold one element (got {value.size})")
    item = value[0]
    return item.decode("utf-8") if isinstance(item, bytes) else str(item)


def _text(request):
    if pb_utils.get_input_tensor_by_name(request, "text_input") is None:
        raise ValueError("input 'text_input' is required")
    return _string(request, "text_input")


def _flag(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return bool(tensor is not None and tensor.as_numpy().reshape(-1)[0])


def _device(setting, args):
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        index = int(args.get("model_instance_device_id", 0) or 0)
        return torch.device(f"cuda:{index}")
    if setting == "cuda":
        raise pb_utils.TritonModelException("device: cuda was asked for but torch sees no CUDA device")
    return torch.device("cpu")
