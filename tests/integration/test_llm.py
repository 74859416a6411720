"""kind: llm on the real embedded Triton: streaming, batching equivalence, cancellation, overload."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonkit import BuildResult, Endpoints, TritonServer, build_repository, load_spec
from tritonkit.serve.llm_client import Generation, LlmStream, generate

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SPEC = """\
name: llmtest
models:
  - name: tiny
    kind: llm
    random_init: {family: gpt2, layers: 2, hidden_size: 64, heads: 4, max_positions: 512, seed: 5}
    device: cpu
    threads: 1
    scheduler: {max_running: 8, kv_cache_tokens: 8192, max_queue: 32}
  - name: narrow
    kind: llm
    random_init: {family: gpt2, layers: 2, hidden_size: 64, heads: 4, max_positions: 512, seed: 5}
    device: cpu
    threads: 1
    scheduler: {max_running: 1, max_queue: 2}
  - name: chat
    kind: ensemble
    steps:
      - model: tiny
        inputs: {text_input: text_input, stream: stream, sampling_parameters: sampling_parameters,
                 exclude_input_in_output: exclude_input_in_output, return_finish_reason: return_finish_reason,
                 return_num_output_tokens: return_num_output_tokens}
        outputs: {text_output: text_output, finish_reason: finish_reason, num_output_tokens: num_output_tokens}
  - name: hf_tiny
    kind: llm
    path: hf_tiny            # a save_pretrained() directory with its own (byte-level BPE) tokenizer
    device: cpu
    threads: 1
  - name: static             # the benchmark's baseline: Triton's batcher feeds generate()
    kind: llm
    random_init: {family: gpt2, layers: 2, hidden_size: 64, heads: 4, max_positions: 512, seed: 5}
    device: cpu
    threads: 1
    max_batch_size: 8
    dynamic_batching: {max_queue_delay_microseconds: 200000}
    scheduler: {mode: static}
"""

GREEDY = {"temperature": 0, "ignore_eos": True}
CORPUS = ["the model streams tokens", "triton serves models", "hello world", "batching in flight"] * 20


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local transformers model + tokenizer, as a user's `path:` would hold (no downloads here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    target = tmp_path_factory.mktemp("hf") / "hf_tiny"
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>")
    tokenizer.save_pretrained(target)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(11)
    GPT2LMHeadModel(config).eval().save_pretrained(target)
    return target


def _project(root: Path, hf_dir: Path) -> Path:
    (root / "tritonkit.yaml").write_text(SPEC)
    shutil.copytree(hf_dir, root / "hf_tiny")
    return root / "tritonkit.yaml"


@pytest.fixture(scope="module")
def llm_build(tmp_path_factory: pytest.TempPathFactory, hf_dir: Path) -> BuildResult:
    project = tmp_path_factory.mktemp("llmproject")
    return build_repository(load_spec(_project(project, hf_dir)), project / "dist", cache_dir=project / "cache")


@pytest.fixture(scope="module")
def llm_server(llm_build: BuildResult) -> Iterator[TritonServer]:
    server = TritonServer(llm_build.path, endpoints=Endpoints.allocate())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def url(llm_server: TritonServer) -> str:
    return f"127.0.0.1:{llm_server.endpoints.grpc_port}"


@pytest.fixture(scope="module")
def reference(llm_build: BuildResult):  # type: ignore[no-untyped-def]
    """Greedy text from HF generate() on the very model files the server loaded."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llm_build.path / "tiny" / "1" / "hf", local_files_only=True).eval()

    def run(prompt: str, n: int) -> str:
        ids = torch.tensor([[256, *prompt.encode()]])
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=258, eos_token_id=None)
        return bytes(t for t in out[0, ids.shape[1] :].tolist() if t < 256).decode("utf-8", errors="replace")

    return run


def metric(server: TritonServer, name: str, model: str = "tiny", **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.endpoints.metrics_port}/metrics", timeout=5).read()
    total = 0.0
    for line in text.decode().splitlines():
        wanted = {"model": model, **labels}
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in wanted.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_stream_is_incremental_with_exactly_one_final(url: str) -> None:
    result = generate(url, "tiny", "Hello", {"max_tokens": 48, **GREEDY})
    assert result.error is None
    assert result.finals == 1
    assert result.finish_reason == "length"
    assert result.output_tokens == 48
    assert len(result.chunks) > 1, "the answer arrived in one piece"
    assert result.chunk_times == sorted(result.chunk_times)
    assert result.chunk_times[0] < result.chunk_times[-1]


def test_non_streamed_answer_has_the_prompt_unless_excluded(url: str, reference) -> None:  # type: ignore[no-untyped-def]
    whole = generate(url, "tiny", "Hi", {"max_tokens": 10, **GREEDY}, stream=False, exclude_input=False)
    assert whole.finals == 1 and len(whole.chunks) == 1
    assert whole.text == "Hi" + reference("Hi", 10)
    bare = generate(url, "tiny", "Hi", {"max_tokens": 10, **GREEDY}, stream=False)
    assert bare.text == reference("Hi", 10)


def test_greedy_matches_generate_alone_and_in_a_busy_batch(url: str, reference) -> None:  # type: ignore[no-untyped-def]
    prompts = [f"prompt number {i} " * (1 + i % 3) for i in range(8)]
    lengths = [16 + 12 * i for i in range(8)]
    alone = generate(url, "tiny", prompts[3], {"max_tokens": lengths[3], **GREEDY})
    assert alone.text == reference(prompts[3], lengths[3])
    streams = [LlmStream(url, "tiny") for _ in prompts]
    try:
        results = [s.send(p, {"max_tokens": n, **GREEDY}) for s, p, n in zip(streams, prompts, lengths)]
        for s in streams:
            s.wait(120)
    finally:
        for s in streams:
            s.close()
    for prompt, n, result in zip(prompts, lengths, results):
        assert result.error is None and result.finals == 1
        assert result.text == reference(prompt, n), f"batched output differs for {prompt!r}"


def test_late_request_starts_before_the_long_one_ends(url: str) -> None:
    with LlmStream(url, "tiny") as long_conn, LlmStream(url, "tiny") as late_conn:
        long = long_conn.send("a long answer", {"max_tokens": 400, **GREEDY})
        while len(long.chunks) < 5:
            time.sleep(0.005)
        late = late_conn.send("quick", {"max_tokens": 4, **GREEDY})
        late_conn.wait(60)
        long_conn.wait(120)
    assert late.chunk_times[0] < long.done_at  # type: ignore[operator]
    assert late.done_at < long.done_at  # type: ignore[operator]


def test_cancelling_one_stream_frees_it_and_spares_the_others(url: str, llm_server: TritonServer, reference) -> None:  # type: ignore[no-untyped-def]
    cancelled_before = metric(llm_server, "vllm:request_success_total", finish_reason="cancelled")
    length_before = metric(llm_server, "vllm:request_success_total", finish_reason="length")
    victim = LlmStream(url, "tiny")
    others = [LlmStream(url, "tiny") for _ in range(2)]
    try:
        kept = [s.send(f"keep {i}", {"max_tokens": 120, **GREEDY}) for i, s in enumerate(others)]
        doomed = victim.send("cancel me", {"max_tokens": 400, **GREEDY})
        while len(doomed.chunks) < 3:
            time.sleep(0.005)
        victim.cancel()
        for s in others:
            s.wait(120)
    finally:
        for s in [victim, *others]:
            s.close()
    for i, result in enumerate(kept):
        assert result.error is None and result.text == reference(f"keep {i}", 120)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = metric(llm_server, "vllm:request_success_total", finish_reason="cancelled") - cancelled_before
        running = metric(llm_server, "vllm:num_requests_running")
        kv = metric(llm_server, "tritonkit_llm_kv_cache_tokens")
        if done == 1 and running == 0 and kv == 0:
            break
        time.sleep(0.1)
    assert len(doomed.chunks) < 400  # the cancel stopped the generation
    assert (running, kv) == (0, 0), f"the cancelled sequence still holds its cache: {running} running, {kv} tokens"
    # Seen once beside a CPU hog (stop 31): freed, nothing counted as cancelled. If the engine ran the
    # victim to its 400 tokens, Triton never reported the stream's cancellation to the stub.
    lengths = metric(llm_server, "vllm:request_success_total", finish_reason="length") - length_before
    assert done == 1, f"freed, but counted {done} cancelled sequences; {lengths} ended by length (2 kept)"


def test_queue_overflow_is_refused_at_once_not_buffered(url: str) -> None:
    streams = [LlmStream(url, "narrow") for _ in range(8)]
    try:
        results = [s.send(f"r{i}", {"max_tokens": 60, **GREEDY}) for i, s in enumerate(streams)]
        for s in streams:
            s.wait(120)
    finally:
        for s in streams:
            s.close()
    refused = [r for r in results if r.error]
    served = [r for r in results if not r.error]
    assert all(r.finals == 1 for r in results)
    assert refused and served, [r.error for r in results]
    assert all("overloaded" in (r.error or "") and "max_queue" in (r.error or "") for r in refused)
    assert all(r.done_at - r.sent_at < 2.0 for r in refused)  # type: ignore[operator]


def test_bad_parameters_fail_alone(url: str, reference) -> None:  # type: ignore[no-untyped-def]
    with LlmStream(url, "tiny") as good_conn:
        good = good_conn.send("steady", {"max_tokens": 80, **GREEDY})
        bad: list[Generation] = []
        for params in ({"max_tokens": 0}, {"temperature": -2}, {"best_of": 3}):
            bad.append(generate(url, "tiny", "x", params))  # type: ignore[arg-type]
        good_conn.wait(120)
    assert [b.finals for b in bad] == [1, 1, 1]
    assert "max_tokens must be >= 1" in (bad[0].error or "")
    assert "temperature must be >= 0" in (bad[1].error or "")
    assert "unknown sampling parameter" in (bad[2].error or "")
    assert good.error is None and good.text == reference("steady", 80)


def test_metrics_count_tokens(url: str, llm_server: TritonServer) -> None:
    before = metric(llm_server, "vllm:generation_tokens_total")
    generate(url, "tiny", "count me", {"max_tokens": 7, **GREEDY})
    assert metric(llm_server, "vllm:generation_tokens_total") - before == 7
    assert metric(llm_server, "vllm:time_to_first_token_seconds_count") > 0


def test_generate_cli_streams_to_the_terminal(url: str, reference) -> None:  # type: ignore[no-untyped-def]
    run = subprocess.run(
        [sys.executable, "-m", "tritonkit", "generate", "tiny", "Hello", "--max-tokens", "12", "--url", url],
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert reference("Hello", 12).encode() in run.stdout.replace(b"\r", b"")
    assert re.search(rb"length .* 12 tokens", run.stderr)


def test_generate_cli_refuses_a_model_that_is_not_an_llm(tmp_path: Path, url: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tritonkit", "generate", "tinny", "Hello", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 5
    assert "did you mean 'tiny'" in run.stderr


def test_a_running_stream_survives_concurrent_senders(url: str) -> None:
    """Many client threads at once: every request ends with exactly one final response."""
    results: list[Generation] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = generate(url, "tiny", f"thread {i}", {"max_tokens": 5 + i, "temperature": 0.7, "seed": i})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 12
    assert all(r.finals == 1 and r.error is None for r in results)


def test_llm_builds_are_reproducible_and_self_contained(tmp_path: Path, llm_build: BuildResult, hf_dir: Path) -> None:
    """A clean rebuild (fresh cache) gives the same digest; the version dir holds engine + model."""
    project = tmp_path / "again"
    project.mkdir()
    again = build_repository(load_spec(_project(project, hf_dir)), project / "dist", cache_dir=project / "cache")
    assert again.digest == llm_build.digest
    version = again.path / "tiny" / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        "engine.py",
        "hf",
        "kv_cache.py",
        "model.json",
        "model.py",
        "output.py",
        "runner.py",
        "scheduler.py",
        "sequences.py",
        "static.py",
        "tokens.py",
    ]
    config = (again.path / "tiny" / "config.pbtxt").read_text()
    assert "decoupled: true" in config and "max_batch_size: 0" in config and 'backend: "python"' in config


def test_an_ensemble_over_the_llm_streams_too(url: str, llm_build: BuildResult, reference) -> None:  # type: ignore[no-untyped-def]
    """A decoupled step makes the generated ensemble decoupled; optional step inputs stay optional."""
    from tritonkit.build import pbtxt

    config = pbtxt.parse((llm_build.path / "chat" / "config.pbtxt").read_text())
    assert config.model_transaction_policy.decoupled
    assert {i.name for i in config.input if i.optional} == {i.name for i in config.input} - {"text_input"}
    result = generate(url, "chat", "Hello", {"max_tokens": 20, **GREEDY})
    assert result.error is None and result.finals == 1 and len(result.chunks) > 1
    assert result.text == reference("Hello", 20) and result.finish_reason == "length"


def test_a_local_transformers_model_serves_with_its_own_tokenizer(url: str, llm_build: BuildResult) -> None:
    """`path:` + tokenizer auto: the HF tokenizer encodes, and decodes the stream piece by piece."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = llm_build.path / "hf_tiny" / "1" / "hf"
    assert (hf / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True).eval()
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    out = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    result = generate(url, "hf_tiny", "hello world", {"max_tokens": 24, **GREEDY})
    assert result.error is None and result.finals == 1 and result.output_tokens == 24
    assert result.text == expected


class _BatchedStream(LlmStream):
    shape = (1, 1)  # a model with max_batch_size > 0


def test_static_mode_batches_through_generate_with_the_same_greedy_text(
    url: str, llm_server: TritonServer, reference
) -> None:  # type: ignore[no-untyped-def]
    prompts = [("a", 12), ("a longer prompt here", 30), ("mid one", 20), ("xyz", 5)]
    streams = [_BatchedStream(url, "static") for _ in prompts]
    try:
        sent = [stream.send(prompt, {"max_tokens": n, **GREEDY}) for stream, (prompt, n) in zip(streams, prompts)]
        for stream in streams:
            stream.wait(120)
        refused = streams[0].send("hi", {"max_tokens": 4, "temperature": 0.8})
        streams[0].wait(60)
    finally:
        for stream in streams:
            stream.close()
    for (prompt, n), result in zip(prompts, sent):
        assert result.error is None and result.finals == 1
        assert result.text == reference(prompt, n), prompt  # same model files and seed as "tiny"
        assert result.finish_reason == "length"
    assert refused.error is not None and "greedy only" in refused.error
    stats = urllib.request.urlopen(
        f"http://127.0.0.1:{llm_server.endpoints.http_port}/v2/models/static/stats", timeout=5
    ).read()
    counts = json.loads(stats)["model_stats"][0]
    assert counts["execution_count"] < counts["inference_count"]  # requests shared generate() calls
