"""The in-flight batching engine in-process (real torch + transformers, no Triton).

The engine is driven step by step (``Engine.step``) so every assertion is about scheduling
order, not wall-clock timing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("llm_engine_under_test", ROOT / "python_backends/llm/engine.py")
assert _spec is not None and _spec.loader is not None
engine = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = engine
_spec.loader.exec_module(engine)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    from tritonkit.build.builders.llm import write_random_model
    from tritonkit.spec.schema import RandomInit

    target = tmp_path_factory.mktemp(request.param) / "hf"
    write_random_model(RandomInit(family=request.param, layers=2, hidden_size=64, heads=4, seed=3), target)
    return AutoModelForCausalLM.from_pretrained(target, local_files_only=True).eval()


class Recorder:
    """A Sink that records events and can be cancelled."""

    def __init__(self) -> None:
        self.events: list = []  # type: ignore[type-arg]
        self.cancel = False

    def emit(self, event) -> None:  # type: ignore[no-untyped-def]
        self.events.append(event)

    def cancelled(self) -> bool:
        return self.cancel

    @property
    def tokens(self) -> list[int]:
        return [t for e in self.events for t in e.tokens]

    @property
    def finals(self) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if e.kind == "final"]


TOK = engine.ByteTokenizer()


def reference(lm, prompt: str, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    ids = torch.tensor([TOK.encode(prompt)])
    out = lm.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=TOK.pad_token_id)
    return out[0, ids.shape[1] :].tolist()


def submit(eng, prompt: str, n: int, **params) -> Recorder:  # type: ignore[no-untyped-def]
    sink = Recorder()
    params.setdefault("temperature", 0)
    sampling = engine.SamplingParams(max_tokens=n, **params)
    eng.submit(engine.Sequence(id=prompt, prompt=prompt, params=sampling, sink=sink))
    return sink


def drain(eng, limit: int = 2000) -> int:  # type: ignore[no-untyped-def]
    """Run steps until nothing is left; returns how many it took."""
    for steps in range(limit):
        if not eng.collect():
            return steps
        eng.step()
    raise AssertionError("engine did not drain")


PROMPTS = [f"tell me {i} " * (1 + i % 4) for i in range(9)]


@pytest.mark.parametrize("kv_budget", [100_000, 260], ids=["roomy", "preempting"])
def test_batched_greedy_is_token_identical_to_generate(lm, kv_budget: int) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets(max_running=4, kv_cache_tokens=kv_budget))
    lengths = [10 + 7 * i for i in range(len(PROMPTS))]
    sinks = [submit(eng, p, n) for p, n in zip(PROMPTS, lengths)]
    drain(eng)
    assert eng.stats.max_batch == 4
    if kv_budget < 1000:
        assert eng.stats.preemptions > 0
    for prompt, n, sink in zip(PROMPTS, lengths, sinks):
        assert len(sink.finals) == 1 and sink.events[-1].kind == "final"
        assert sink.tokens == reference(lm, prompt, n)
        assert sink.finals[0].finish_reason in ("length", "stop")
    assert eng.stats.kv_used == 0 and eng.stats.running == 0


def test_slot_cache_grows_widens_and_refills_rows_without_changing_tokens(lm) -> None:  # type: ignore[no-untyped-def]
    """Staggered arrivals of short and long prompts, rows finishing in the middle, > 4 rows.

    The schedule walks every path of the slot cache: more rows than slots, a longer prompt
    joining (widened in place after a trim, or by regrowing), refilled holes, and decode columns
    running past the buffer's capacity.
    """
    eng = engine.Engine(lm, TOK, engine.Budgets(max_running=8))
    arrivals = {  # step -> (prompt, max_tokens)
        0: ("a long opening prompt, " * 2, 10),
        1: ("hi", 90),
        14: ("a prompt of thirty bytes here.", 20),
        15: ("mid size prompt", 50),
        16: ("x", 5),
        17: ("longest prompt " * 6, 20),
        18: ("y", 41),
        19: ("z z", 12),
        20: ("tell me more", 33),
        21: ("q", 7),
        22: ("another long one " * 4, 25),
    }
    sinks = {}
    for step in range(400):
        if step in arrivals:
            sinks[step] = submit(eng, *arrivals[step], ignore_eos=True)
        if not eng.collect():
            break
        eng.step()
        if eng.scheduler.running:
            layer = eng.runner.cache.layers[0]
            assert type(layer).__name__ == "SlotLayer" and layer.owns_view()
            columns = eng.runner.columns
            for i, seq in enumerate(eng.scheduler.running):  # padding before a row's own tokens is zeros
                assert not layer.keys[i, :, : columns - seq.cached].any()
                assert not layer.values[i, :, : columns - seq.cached].any()
    assert not eng.scheduler.running and eng.stats.max_batch > 4
    for step, sink in sinks.items():
        assert sink.tokens == reference(lm, *arrivals[step]), arrivals[step][0]


def test_late_arrival_gets_its_first_token_while_the_long_one_runs(lm) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets(max_running=4))
    long = submit(eng, "a long story", 120, ignore_eos=True)
    for _ in range(5):
        eng.collect()
        eng.step()
    late = submit(eng, "short", 5, ignore_eos=True)
    eng.collect()
    eng.step()
    assert late.tokens, "the late request waited for the batch"
    assert not long.finals and len(long.tokens) < 10
    drain(eng)
    assert long.tokens == reference(lm, "a long story", 120)


def test_cancelled_sequence_stops_within_one_step_and_frees_its_rows(lm) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets(max_running=4))
    keep = submit(eng, "keep going", 40, ignore_eos=True)
    drop = submit(eng, "cancel me please, I am long", 200, ignore_eos=True)
    for _ in range(3):
        eng.collect()
        eng.step()
    used_before = eng.stats.kv_used
    produced = len(drop.tokens)
    drop.cancel = True
    eng.step()
    assert [e.finish_reason for e in drop.finals] == ["cancelled"]
    assert len(drop.tokens) == produced  # nothing after the cancel
    assert eng.stats.running == 1 and eng.stats.kv_used < used_before
    drain(eng)
    assert keep.tokens == reference(lm, "keep going", 40)
    assert len(drop.finals) == 1


def test_queue_limit_refuses_instead_of_growing(lm) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets(max_running=1, max_queue=2))
    submit(eng, "one", 4)
    submit(eng, "two", 4)
    with pytest.raises(engine.QueueFull, match="max_queue"):
        submit(eng, "three", 4)


def test_no_evict_never_preempts(lm) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets(max_running=4, kv_cache_tokens=260, preemption="no_evict"))
    sinks = [submit(eng, p, 30, ignore_eos=True) for p in PROMPTS[:6]]
    drain(eng)
    assert eng.stats.preemptions == 0
    for prompt, sink in zip(PROMPTS, sinks):
        assert sink.tokens == reference(lm, prompt, 30)


def test_stop_string_ends_the_sequence_and_is_not_returned(lm) -> None:  # type: ignore[no-untyped-def]
    full = TOK.decode(reference(lm, "stop here", 40))
    cuts = [i for i in range(4, len(full) - 3) if "\ufffd" not in full[i : i + 2]]
    assert cuts, f"the random model's greedy text has no clean two-character window: {full!r}"
    cut = cuts[0]
    stop = full[cut : cut + 2]
    first = full.find(stop)
    eng = engine.Engine(lm, TOK, engine.Budgets())
    sink = submit(eng, "stop here", 40, stop=[stop])
    drain(eng)
    text = "".join(e.text for e in sink.events)
    assert sink.finals[0].finish_reason == "stop"
    assert text == full[:first]


def test_seeded_sampling_repeats_and_differs_from_greedy(lm) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets())
    a = submit(eng, "sample", 30, temperature=1.5, top_k=50, top_p=0.9, seed=7, ignore_eos=True)
    b = submit(eng, "sample", 30, temperature=1.5, top_k=50, top_p=0.9, seed=7, ignore_eos=True)
    drain(eng)
    assert a.tokens == b.tokens
    assert a.tokens != reference(lm, "sample", 30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"max_tokens": 0}', "max_tokens must be >= 1"),
        ('{"temperature": -1}', "temperature must be >= 0"),
        ('{"top_p": 0}', "top_p must be in"),
        ('{"max_tokens": "ten"}', "'max_tokens' must be int"),
        ('{"beam_width": 2}', "unknown sampling parameter"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_sampling_parameters_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(engine.ParameterError, match=message):
        engine.SamplingParams.from_json(text)


def test_vllm_style_string_values_are_accepted() -> None:
    params = engine.SamplingParams.from_json('{"max_tokens": "12", "temperature": "0", "ignore_eos": "true"}')
    assert (params.max_tokens, params.greedy, params.ignore_eos) == (12, True, True)


def test_prompt_longer_than_the_model_is_refused(lm) -> None:  # type: ignore[no-untyped-def]
    eng = engine.Engine(lm, TOK, engine.Budgets())
    with pytest.raises(engine.ParameterError, match="positions"):
        submit(eng, "x" * 1100, 10)


def test_invalid_bytes_stream_at_once_and_split_characters_wait() -> None:
    tok = engine.ByteTokenizer()
    detok = tok.detokenizer()
    for byte in "€".encode()[:2]:
        detok.push(byte)
    assert detok.text == ""  # half a character: held back
    detok.push("€".encode()[2])
    assert detok.text == "€"
    junk = tok.detokenizer()
    for byte in [0xE0, 0xE0, 0x9E]:  # never valid UTF-8
        junk.push(byte)
    assert junk.text == tok.decode([0xE0, 0xE0, 0x9E])  # final U+FFFDs, sent right away
    tail = tok.detokenizer()
    for byte in [*b"ok", 0xE2, 0x82]:
        tail.push(byte)
    assert tail.text == "ok" and tail.finish() == tok.decode([*b"ok", 0xE2, 0x82])


def _bpe(kind: str):  # type: ignore[no-untyped-def]
    """Small trained tokenizers of the three families whose decoders differ (no downloads here)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["the model streams tokens, isn't it?", "triton serves models.", "héllo wörld €5", "batching in flight"]
    if kind == "wordpiece":  # BERT / MiniLM: "##" continuations, cleanup of " ." and " 's"
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(
            corpus * 5, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]", "[SEP]"])
        )
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]",
                                       clean_up_tokenization_spaces=True)  # fmt: skip
    if kind == "metaspace":  # SentencePiece / Llama: "▁" spaces, byte fallback, first space dropped
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])  # fmt: skip
        alphabet = [f"<0x{i:02X}>" for i in range(256)]
        tok.train_from_iterator(
            corpus * 5, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>", *alphabet])
        )
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))  # GPT-2: byte-level
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(corpus * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


@pytest.mark.parametrize("kind", ["byte-level", "wordpiece", "metaspace"])
def test_windowed_detokenizer_streams_exactly_what_a_full_decode_gives(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import random

    _bpe(kind).save_pretrained(tmp_path)
    tok = engine.HFTokenizer(str(tmp_path))
    size = len(tok._tok)
    rng = random.Random(5)
    windowed = 0
    for _ in range(300):  # random ids: split characters, invalid bytes, specials, continuations
        ids = [rng.randrange(size) for _token in range(rng.randrange(1, 60))]
        detok = tok.detokenizer()
        sent = ""
        for token in ids:
            detok.push(token)
            assert detok.text.startswith(sent), (kind, ids)  # never takes back what went out
            sent = detok.text
        assert detok.finish() == tok.decode(ids), (kind, ids)
        windowed += detok._windowed
    assert windowed == 300  # the O(1) path held for every sequence


def test_a_failing_model_ends_every_request_once_and_refuses_new_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    from tritonkit.build.builders.llm import write_random_model
    from tritonkit.spec.schema import RandomInit

    write_random_model(RandomInit(layers=1, hidden_size=32, heads=2, seed=1), tmp_path / "hf")
    broken = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    broken.lm_head = torch.nn.Linear(7, 259)  # the hidden size is 32: every forward pass raises
    eng = engine.Engine(broken, TOK, engine.Budgets())
    sinks = [submit(eng, f"p{i}", 5) for i in range(3)]
    eng._thread = threading.Thread(target=eng._loop)  # the real loop, joined here to see it end
    eng._thread.start()
    eng._thread.join(30)
    assert isinstance(eng.error, RuntimeError)
    for sink in sinks:
        assert [e.finish_reason for e in sink.finals] == ["error"]
        assert "engine failed" in (sink.finals[0].error or "")
    with pytest.raises(engine.EngineFailed, match="RuntimeError"):
        submit(eng, "after", 5)
