"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a page outside the
nav or any warning fails it), and its generated references are complete: every command of the
CLI, every field of the spec."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tritonkit.cli import main
from tritonkit.spec.jsonschema import spec_schema


def test_the_site_builds_strictly_with_every_command_and_every_spec_field(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for name in main.commands:
        assert re.search(rf"tritonkit {re.escape(name)}\b", cli), f"command '{name}' missing from the CLI reference"
    spec = (site / "reference" / "spec" / "index.html").read_text()
    schema = spec_schema()
    for name, body in {"Spec": schema, **schema["$defs"]}.items():
        assert f'id="{name.lower()}"' in spec, f"{name} has no section"
        for field in body.get("properties", {}):
            assert f"<code>{field}</code>" in spec, f"{name}.{field} missing from the spec reference"


def test_the_spec_reference_is_generated_from_the_schema() -> None:
    loader = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert loader is not None and loader.loader is not None
    hooks = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(hooks)
    page = hooks.on_page_markdown(f"before\n{hooks.MARKER}\nafter", None, None, None)
    assert hooks.MARKER not in page and "### Spec {#spec}" in page and "| `max_batch_size` |" in page
