"""`tritonkit --help` stays cheap: it imports none of the heavy stages (a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("grpc", "numpy", "tritonclient", "google.protobuf", "pydantic", "onnx", "torch")


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from tritonkit.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('heavy:', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert done.stdout.splitlines()[-1] == "heavy: "  # none imported
