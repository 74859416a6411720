"""Builder for ``kind: python``: copies the user's model directory into the version directory.

Example:
    A spec entry ``{kind: python, path: models/postprocess, inputs: [...], outputs: [...]}``
    becomes ``postprocess/config.pbtxt`` (``backend: "python"``) and ``postprocess/1/model.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.build.builders.base import VERSION, BuildContext
from tritonkit.build.modelconfig import model_config
from tritonkit.spec.loader import asset_path
from tritonkit.spec.schema import LoadedSpec, ModelBase, PythonModel

_SKIP = ("__pycache__", "*.pyc", ".*")


class PythonBuilder:
    """Copies ``path/`` (model.py and whatever it ships) and renders a python-backend config."""

    kind = "python"

    def input_files(self, loaded: LoadedSpec, model: ModelBase) -> list[Path]:
        assert isinstance(model, PythonModel)
        root = loaded.resolve(model.path)
        files = {p for p in root.rglob("*") if p.is_file() and not _skipped(p.relative_to(root))}
        for source in model.assets.values():
            path = asset_path(loaded, source)
            if path is not None:
                files.update([path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()))
        return sorted(files)

    def tool_versions(self, model: ModelBase) -> dict[str, str]:
        return {}

    def build(self, ctx: BuildContext, model_dir: Path) -> pb.ModelConfig:
        model = ctx.model
        assert isinstance(model, PythonModel)
        source = ctx.loaded.resolve(model.path)
        shutil.copytree(source, model_dir / VERSION, ignore=shutil.ignore_patterns(*_SKIP))
        for dest, asset in sorted(model.assets.items()):
            found = asset_path(ctx.loaded, asset)
            assert found is not None  # load_spec checked it
            target = model_dir / VERSION / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if found.is_dir():
                shutil.copytree(found, target, ignore=shutil.ignore_patterns(*_SKIP), dirs_exist_ok=True)
            else:
                shutil.copyfile(found, target)
            ctx.log(f"asset {dest} <- {asset}")
        ctx.log(f"copied {source.name}/ ({len(self.input_files(ctx.loaded, model))} files)")
        return model_config(model, backend="python", inputs=model.inputs, outputs=model.outputs)


def _skipped(rel: Path) -> bool:
    return any(part == "__pycache__" or part.startswith(".") for part in rel.parts) or rel.suffix == ".pyc"
