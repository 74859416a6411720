"""How `make test` spreads the suite over its two pytest-xdist workers.

pytest-xdist's ``loadfile`` sends whole modules to workers, so a module's fixtures (a built
project, a running Triton) are made once. ``make test`` runs ``--dist loadfile`` with
:class:`ModuleScheduling`, which changes one thing: the modules that measure time or load
(:data:`MEASURE`) form a single unit, so they run one after another on one worker while the
other worker runs the rest, module by module. Each of them then shares the host with one other
test at a time, as it would share a CI runner with another job: what they assert is what the tool
guarantees (a claimed winner within its budget, a refusal that is immediate), not a quiet host's
figures.

The grouping is done here, on the controller, from the test ids: pytest-xdist's own
``--dist loadgroup`` reads ``xdist_group`` marks into the ids through ``Item._nodeid``, which
pytest 9 no longer reads (``Node.nodeid`` is ``str(self._id)``), so with pytest 9.2 and xdist 3.8
every test was its own unit and a module's tests ran on both workers, each with its own module
fixtures.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xdist.scheduler import LoadFileScheduling

# Modules whose outcome depends on measured time or load: throughput, p99 against a budget that
# traffic can break, batches per second, canary and SLO judgements, the README's bench and tune, the
# variant search's screening. (Beside a CPU hog, 2026-12-07, these took 504 s of test time and the
# rest 604 s: test_variants, 57 s, moved here to even the two.)
# Modules that only read metrics (whether a rule evaluates, whether check says inconclusive or
# judges an unmissable budget) run with the rest. Listed in the order they run: the longest first,
# so that the worker is not handed another unit while one long test is still left.
MEASURE = (
    "test_readme", "test_promote_analysis", "test_llm", "test_check_llm", "test_tune", "test_tune_llm",
    "test_admission", "test_bench", "test_canary_analysis", "test_variants",
)  # fmt: skip
MEASURE_UNIT = "measure"

# The longest modules of the rest, started first so that no worker is left with one of them at the
# end (the 25 slowest are printed after every run).
FIRST = ("test_ci_recipe", "test_promote", "test_promote_ensemble", "test_promote_transaction", "test_embeddings",
         "test_model_families", "test_observability", "test_supervise")  # fmt: skip


def rank(module: str) -> tuple[int, int]:
    """Where a module (its file's stem) runs: the measuring unit first, then :data:`FIRST`, then
    the rest in collection order."""
    if module in MEASURE:
        return (0, MEASURE.index(module))
    if module in FIRST:
        return (1, FIRST.index(module))
    return (2, 0)


class ModuleScheduling(LoadFileScheduling):
    """``loadfile``, except that every module in :data:`MEASURE` belongs to one unit."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return MEASURE_UNIT if PurePosixPath(path).stem in MEASURE else path
