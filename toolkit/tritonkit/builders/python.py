"""Builder for ``kind: python``: copies the user's model directory into the version directory.

Example:
    A spec entry ``{kind: python, path: models/postprocess, inputs: [...], outputs: [...]}``
    becomes ``postprocess/config.pbtxt`` (``backend: "python"``) and ``postprocess/1/model.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from ..modelconfig import model_config
from ..spec import LoadedSpec, ModelBase, PythonModel
from . import VERSION, BuildContext

_SKIP = ("__pycache__", "*.pyc", ".*")


class PythonBuilder:
    """Copies ``path/`` (model.py and whatever it ships) and renders a python-backend config."""

    kind = "python"

    def input_files(self, loaded: LoadedSpec, model: ModelBase) -> list[Path]:
        assert isinstance(model, PythonModel)
        root = loaded.resolve(model.path)
        return sorted(p for p in root.rglob("*") if p.is_file() and not _skipped(p.relative_to(root)))

    def tool_versions(self, model: ModelBase) -> dict[str, str]:
        return {}

    def build(self, ctx: BuildContext, model_dir: Path) -> pb.ModelConfig:
        model = ctx.model
        assert isinstance(model, PythonModel)
        source = ctx.loaded.resolve(model.path)
        shutil.copytree(source, model_dir / VERSION, ignore=shutil.ignore_patterns(*_SKIP))
        ctx.log(f"copied {source.name}/ ({len(self.input_files(ctx.loaded, model))} files)")
        return model_config(model, backend="python", inputs=model.inputs, outputs=model.outputs)


def _skipped(rel: Path) -> bool:
    return any(part == "__pycache__" or part.startswith(".") for part in rel.parts) or rel.suffix == ".pyc"
