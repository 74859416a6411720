"""The README and the guides run: every bash/sh/console block is executed, or marked as not runnable here.

The tour is the README followed by the documentation's guides, in :data:`TOUR` order (the order
the README and docs/index.md list them). All runnable blocks run in order as one bash script (one
shell, as a reader typing them: `cd` and background servers carry over) in a copy of the
repository's example project. A shell block in any other page of docs/ must be marked not-run. A block is
skipped only when the line before it is ``<!-- not-run: REASON -->``. In a ``console`` block,
``$ `` lines are commands and the lines under one are its expected output, compared exactly.
The README's servers use Triton's default ports 8000-8002, so the test skips when they are busy.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, copy_example

README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDES = ("bench", "tune", "intent", "releases", "publish", "kserve", "helm", "promotion", "ensembles", "tensorrt",
          "llm", "builds", "server")  # fmt: skip
TOUR = [README, *(DOCS / "guides" / f"{name}.md" for name in GUIDES), DOCS / "reference" / "spec.md"]
SHELLS = ("bash", "sh", "console")
NOT_RUN = re.compile(r"<!-- not-run: (.+?) -->")


@dataclass
class Block:
    source: str  # the page, relative to the repository
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str = ""
    commands: list[tuple[str, list[str]]] = field(default_factory=list)  # console: (command, output lines)


def blocks(page: Path) -> list[Block]:
    """Every fenced shell block of ``page`` with its not-run reason, if any."""
    source = page.relative_to(ROOT).as_posix()
    lines = page.read_text().splitlines()
    found: list[Block] = []
    number = 0
    while number < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[number])
        if not fence:
            number += 1
            continue
        end = next(n for n in range(number + 1, len(lines)) if lines[n].startswith("```"))
        if fence.group(1) in SHELLS:
            before = next((lines[n] for n in range(number - 1, -1, -1) if lines[n].strip()), "")
            marker = NOT_RUN.fullmatch(before.strip())
            body = "\n".join(lines[number + 1 : end])
            block = Block(source, number + 1, fence.group(1), body, marker.group(1) if marker else "")
            if block.language == "console":
                for row in lines[number + 1 : end]:
                    if row.startswith("$ "):
                        block.commands.append((row[2:], []))
                    else:
                        assert block.commands, f"{source}:{block.line}: output before any '$ ' command"
                        block.commands[-1][1].append(row)
            found.append(block)
        number = end + 1
    return found


def script(found: list[Block], outputs: Path) -> tuple[str, list[tuple[Block, str, list[str], Path]]]:
    """One bash script of the runnable blocks, and the console outputs it will write to compare."""
    parts = ["set -eo pipefail", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    expected: list[tuple[Block, str, list[str], Path]] = []
    for block in found:
        if block.not_run:
            continue
        parts.append(f'echo ">>> {block.source}:{block.line} (started at ${{SECONDS}} s)" >&2')  # where time goes
        if block.language != "console":
            parts.append(block.text)
            continue
        for number, (command, output) in enumerate(block.commands):
            target = outputs / f"{block.source.replace('/', '_')}-{block.line}-{number}.txt"
            parts.append(f"{{ {command} ; }} > {target} 2>&1 || true")  # the output shown may be an error
            expected.append((block, command, output, target))
    return "\n".join(parts) + "\n", expected


def _tour() -> list[Block]:
    return [block for page in TOUR for block in blocks(page)]


def test_every_shell_block_runs_or_says_why_not() -> None:
    found = _tour()
    assert len(found) >= 10
    for block in found:
        assert block.not_run == "" or len(block.not_run) > 10, f"{block.source}:{block.line}: give a reason to not run"
    assert any(not b.not_run for b in found) and any(b.not_run for b in found)
    for page in sorted(set(DOCS.rglob("*.md")) - set(TOUR)):  # outside the tour: nothing runs, each says why
        for block in blocks(page):
            assert len(block.not_run) > 10, (
                f"{block.source}:{block.line}: a shell block outside the tour must be not-run"
            )


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def test_the_readme_runs(tmp_path: Path) -> None:
    if not _ports_free(8000, 8001, 8002):
        pytest.skip("Triton's default ports 8000-8002 are in use; the README's commands use them")
    workspace = tmp_path / "repo"
    copy_example(workspace / "model_repository")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    text, expected = script(_tour(), outputs)
    (tmp_path / "readme.sh").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITONKIT_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        ["bash", str(tmp_path / "readme.sh")],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    last = [line for line in done.stderr.splitlines() if line.startswith(">>> ")]
    assert done.returncode == 0, f"failed in the block at {last[-1] if last else '?'}:\n{done.stderr[-4000:]}"
    for block, command, output, target in expected:
        actual = [line.rstrip() for line in target.read_text().splitlines()]
        assert actual == [line.rstrip() for line in output], (
            f"{block.source}:{block.line}: '{command}' printed {actual}"
        )
    assert (workspace / "my-model" / "tritonkit.yaml").is_file()  # init did not touch the demo's spec
    assert (workspace / "exported" / "demo-v2" / "tritonkit.lock.json").is_file()
