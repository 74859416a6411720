"""The LLM engine's scheduler and output processor without a model (issue 23 item 5).

``python_backends/llm/scheduler.py`` decides each step from sequences' token counts alone, so
admission, the token and KV budgets, preemption and cancellation are checked here on plain
sequences; the engine's tests (tests/integration/test_llm_engine.py) check that executing the
plans on a real model gives ``generate()``'s tokens.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

LLM = Path(__file__).resolve().parents[2] / "python_backends" / "llm"


def _load(name: str) -> ModuleType:
    key = f"llm_{name}_under_test"
    spec = importlib.util.spec_from_file_location(key, LLM / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


sequences, scheduler, output = _load("sequences"), _load("scheduler"), _load("output")


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.cancel = False

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def cancelled(self) -> bool:
        return self.cancel


def seq(prompt_tokens: int, max_tokens: int = 8, generated: int = 0, name: str = "") -> Any:
    s = sequences.Sequence(
        id=name or f"p{prompt_tokens}", prompt="", params=sequences.SamplingParams(max_tokens=max_tokens), sink=Sink()
    )
    s.prompt_ids, s.generated = [1] * prompt_tokens, [2] * generated
    return s


def run(s: Any, plan: Any) -> None:
    """Apply a plan as the engine would, with every prefill joining the batch."""
    for victim in plan.cancelled:
        s.drop(victim)
    s.reorder([i for i in range(len(s.running)) if i not in plan.cancelled_rows])
    for admitted in plan.prefill:
        if not admitted.generated:
            admitted.generated.append(3)  # the prefill's token
        s.admit(admitted)
    for victim in plan.preempt:
        s.reorder([i for i, r in enumerate(s.running) if r is not victim])
        s.preempt(victim)
    for row in s.running if plan.decode else []:
        row.generated.append(4)


def test_the_kv_budget_is_rows_times_the_widest_row_and_a_decode_adds_a_column() -> None:
    kv = scheduler.KvBudget(capacity=40)
    rows = [seq(3, generated=2), seq(9, generated=1)]  # cached 4 and 9: the cache is 2 x 9
    assert kv.columns(rows) == 9 and kv.used(2, 9) == 18
    assert kv.step_fits(4, 9) and not kv.step_fits(5, 9)  # 4 x 10 = 40; 5 x 10 = 50
    assert kv.worst_fits(2, 9, 11) and not kv.worst_fits(2, 9, 12)


def test_admission_is_first_come_first_served_within_max_running() -> None:
    s = scheduler.Scheduler(scheduler.Budgets(max_running=2))
    a, b, c = seq(4, name="a"), seq(4, name="b"), seq(4, name="c")
    s.waiting.extend([a, b, c])
    plan = s.schedule()
    assert plan.prefill == [a, b] and plan.decode and not plan.preempt
    assert list(s.waiting) == [a, b, c]  # a plan changes nothing
    run(s, plan)
    assert s.running == [a, b] and list(s.waiting) == [c] and (a.admitted, b.admitted) == (1, 2)
    assert s.schedule().prefill == []  # full until a row leaves


def test_a_prompt_over_the_step_token_budget_waits_unless_it_runs_alone() -> None:
    s = scheduler.Scheduler(scheduler.Budgets(max_batched_tokens=10))
    short, long = seq(4, name="short"), seq(30, name="long")
    s.waiting.extend([short, long])
    assert s.schedule().prefill == [short]  # 10 - 0 running: 4 fits, then 30 does not
    alone = scheduler.Scheduler(scheduler.Budgets(max_batched_tokens=10))
    alone.waiting.append(long)
    assert alone.schedule().prefill == [long]  # nothing else in the step: it runs


def test_admission_stops_where_the_next_decode_would_not_fit_the_kv_budget() -> None:
    # two prompts of 9: after both prefills the cache is 2 x 9 and the decode writes a 10th column
    s = scheduler.Scheduler(scheduler.Budgets(kv_cache_tokens=20))
    a, b, c = seq(9, name="a"), seq(9, name="b"), seq(1, name="c")
    s.waiting.extend([a, b, c])
    plan = s.schedule()
    assert plan.prefill == [a, b]  # 3 x 10 = 30 > 20: c waits, though its prompt is 1 token
    assert not plan.preempt


def test_the_newest_row_is_preempted_when_the_batch_outgrows_the_cache() -> None:
    s = scheduler.Scheduler(scheduler.Budgets(kv_cache_tokens=24))
    old, new = seq(5, max_tokens=50, name="old"), seq(5, max_tokens=50, name="new")
    s.waiting.extend([old, new])
    steps = 0
    while not any(r.preemptions for r in (old, new)):
        run(s, s.schedule())
        steps += 1
    # a row caches 5 after its prefill and one more each step: at the 8th step both cache 12 and
    # 2 x (12 + 1) > 24, so the newer one went back to the queue
    assert new.preemptions == 1 and old.preemptions == 0 and s.running == [old]
    assert list(s.waiting) == [new] and steps == 8
    plan = s.schedule()
    assert plan.prefill == []  # readmitting it needs 2 x (12 + 1) > 24: it waits for room


def test_no_evict_admits_only_what_fits_when_every_row_reaches_max_tokens() -> None:
    s = scheduler.Scheduler(scheduler.Budgets(kv_cache_tokens=60, preemption="no_evict"))
    a, b = seq(5, max_tokens=20, name="a"), seq(5, max_tokens=20, name="b")
    s.waiting.extend([a, b])
    assert s.schedule().prefill == [a, b]  # both reaching 20 tokens: 2 x (5 + 20) = 50 <= 60
    tight = scheduler.Scheduler(scheduler.Budgets(kv_cache_tokens=49, preemption="no_evict"))
    tight.waiting.extend([seq(5, max_tokens=20), seq(5, max_tokens=20)])
    assert len(tight.schedule().prefill) == 1  # 50 > 49, though the next decode alone (2 x 6) fits
    while not s.idle:
        plan = s.schedule()
        assert not plan.preempt
        run(s, plan)
        for row in list(s.running):
            if len(row.generated) >= row.params.max_tokens:
                s.reorder([i for i, r in enumerate(s.running) if r is not row])


def test_cancelled_sequences_are_dropped_from_the_queue_and_the_batch() -> None:
    s = scheduler.Scheduler(scheduler.Budgets(max_running=2))
    a, b, c = seq(3, name="a"), seq(3, name="b"), seq(3, name="c")
    s.waiting.extend([a, b, c])
    run(s, s.schedule())
    a.sink.cancel = c.sink.cancel = True
    plan = s.schedule()
    assert plan.cancelled == [c] and plan.cancelled_rows == [0] and plan.prefill == []
    run(s, plan)
    assert s.running == [b] and not s.waiting


def test_the_output_processor_holds_back_a_possible_stop_string_and_ends_once() -> None:
    class Detok:
        def __init__(self) -> None:
            self.text = ""

        def push(self, token: int) -> None:
            self.text += chr(token)

        def finish(self) -> str:
            return self.text

    class Tokenizer:
        eos_token_id = 0

    stats = type("Stats", (), {"generation_tokens": 0})()
    out = output.OutputProcessor(Tokenizer(), stats, sequences.Event)
    s = seq(1, max_tokens=20)
    s.params = sequences.SamplingParams(max_tokens=20, stop=("END",))
    s.generated, s.detok = [], Detok()
    for ch in "hi EN":
        out.accept(s, ord(ch))
    assert "".join(e.text for e in s.sink.events) == "hi "  # "EN" may become "END"
    out.accept(s, ord("D"))
    finals = [e for e in s.sink.events if e.kind == "final"]
    assert [(e.finish_reason, e.text) for e in finals] == [("stop", "")] and stats.generation_tokens == 6
    out.finish(s, "cancelled")
    assert len([e for e in s.sink.events if e.kind == "final"]) == 1
