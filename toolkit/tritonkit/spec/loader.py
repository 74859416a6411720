"""Loading a tritonkit.yaml: YAML → validated :class:`~tritonkit.spec.schema.Spec`, with errors that point at the key.

Every problem becomes a :class:`~tritonkit.errors.SpecError` naming the file, line, key path
and a fix; unknown keys get a "did you mean". Files the spec names (ONNX files, python model
directories, assets, ensemble step files) are checked here, so a build never starts on a spec
whose inputs are missing.

**Confinement**: every source path must resolve, after symlinks, inside the *project* — the
spec's directory, or ``project_root:`` (relative to the spec, and containing it) — and a
``package:NAME/…`` asset inside that package's directory. Inside a source directory, a symlink
that leads outside is refused too (a build would copy what it points at). ``..`` and absolute
paths are fine while they stay inside.

Length: about 490 lines, in one module on purpose: every check here reports against the YAML
node tree (file, line, key path), and parsing, schema errors, confinement (links, hard links,
devices, at every level) and the file checks share those position helpers.

Example:
    >>> loaded = load_spec(Path("model_repository/tritonkit.yaml"))
    >>> [m.name for m in loaded.spec.models]
    ['classifier', 'postprocess', 'classify', 'tokenize', 'minilm', 'pool', 'embed', 'llm']

Length: about 510 lines: YAML with line-numbered errors, includes, and the per-kind file
checks that must point at the spec's own lines (they need the YAML nodes the loader holds).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from tritonkit.errors import SpecError, did_you_mean
from tritonkit.spec import dtypes
from tritonkit.spec.schema import (
    EnsembleModel,
    EnsembleStep,
    LlmModel,
    LoadedSpec,
    OnnxModel,
    PythonModel,
    Spec,
    TensorRTModel,
)

# --------------------------------------------------------------------------- loading


def load_spec(path: Path) -> LoadedSpec:
    """Read, validate and check the files a spec names.

    Args:
        path: the tritonkit.yaml file.

    Returns:
        The validated spec with its location.

    Raises:
        SpecError: for unreadable YAML, schema violations and missing files; the message
            names the file, line and key path, and the hint says how to fix it.
    """
    if not path.is_file():
        raise SpecError(
            "file not found", file=path, hint="run 'tritonkit init' to write a starter spec, or pass -f PATH"
        )
    data, root_node = _parse(path)
    if not isinstance(data, dict):
        raise SpecError(
            "the spec must be a mapping with 'name' and 'models'", file=path, hint="see 'tritonkit init' for a starter"
        )
    try:
        spec = Spec.model_validate(data).with_slo_defaults()
    except ValidationError as exc:
        raise _spec_error(exc, path, root_node) from None
    loaded = LoadedSpec(spec=spec, path=path.resolve())
    _check_project(loaded, root_node)
    _check_files(loaded, root_node)
    return _with_step_files(loaded, root_node)


_MAX_BYTES = 4 << 20  # a spec is a few kB; refuse to parse a file that is not one


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML 1.2 requires unique
    keys; PyYAML keeps the last value silently, so a duplicated ``max_batch_size`` would win
    without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                first = seen[key].start_mark.line + 1
                problem = f"key '{key}' appears twice in one mapping (first on line {first})"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    """The spec's data and its node tree (for line numbers).

    Raises:
        SpecError: not UTF-8 text, too big, invalid YAML (with line:column), a duplicate key, or
            nested too deeply to be a spec.
    """
    raw = path.read_bytes()
    if len(raw) > _MAX_BYTES:
        raise SpecError(f"{len(raw)} bytes: too big to be a spec", file=path, hint="a spec is a YAML file of a few kB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})",
            file=path,
            hint="save the spec as UTF-8 (YAML files are UTF-8)",
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader), yaml.compose(text)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"invalid YAML: {problem}", file=where, hint="fix the YAML syntax at that line") from None
    except RecursionError:
        raise SpecError(
            "nested too deeply to be a spec", file=path, hint="a spec nests a few levels; check the file is the spec"
        ) from None


def _check_project(loaded: LoadedSpec, node: yaml.Node | None) -> None:
    """``project_root`` must be a directory that contains the spec."""
    if loaded.spec.project_root is None:
        return
    project = loaded.project
    if not project.is_dir() or not loaded.root.is_relative_to(project):
        raise SpecError(
            f"'{loaded.spec.project_root}' ({project}) is not a directory containing the spec",
            file=_where(loaded.path, node, ("project_root",)),
            key="project_root",
            hint="set it to the spec's directory or one above it, e.g. '..' for a spec in a subfolder",
        )


def _confine(
    loaded: LoadedSpec, node: yaml.Node | None, key: tuple[Any, ...], rel: str, *, inside: Path | None = None
) -> None:
    """``rel`` (spec-relative, or already a path under ``inside``) must resolve inside the project
    (or ``inside``, a package's directory), and so must every symlink under it.

    Raises:
        SpecError: naming the key, the path it resolves to and the boundary.
    """
    boundary = inside if inside is not None else loaded.project
    path = Path(rel) if inside is not None else loaded.root / rel
    where = "the package's directory" if inside is not None else "the project"
    hint = (
        "sources stay inside the project (the spec's directory, or 'project_root:' above it): copy the file in, "
        "or ship it in an installed package and name it package:NAME/path"
    )
    resolved = path.resolve()
    if not resolved.is_relative_to(boundary):
        raise SpecError(
            f"'{rel}' resolves to {resolved}, outside {where} ({boundary})",
            file=_where(loaded.path, node, key),
            key=_dotted(key),
            hint=hint,
        )

    def refuse(entry: Path, problem: str, fix: str) -> NoReturn:
        """``problem`` names the entry as ``{entry}``."""
        shown = entry.relative_to(resolved) if entry != resolved else Path(rel)
        text = problem.replace("{entry}", str(shown))
        raise SpecError(f"'{rel}' holds {text}", file=_where(loaded.path, node, key), key=_dotted(key), hint=fix)

    # Every level, following symlinked directories as the builders' copies do (each real
    # directory once: a link cycle ends), so a link inside a linked directory is checked too.
    seen: set[Path] = set()
    if not resolved.exists():
        return  # a missing source is reported by the file checks, with what it should be
    pending = [resolved] if resolved.is_dir() else []
    if not pending:
        _check_entry(resolved, boundary, where, refuse)
    while pending:
        directory = pending.pop()
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        for entry in sorted(directory.iterdir()):
            target = entry.resolve()
            if entry.is_symlink() and not target.is_relative_to(boundary):
                refuse(
                    entry,
                    f"a symlink {{entry}} -> {os.readlink(entry)} that leads outside {where} ({boundary})",
                    "replace the link with the file itself, or point it inside: a build copies its target",
                )
            if target.is_dir():
                if entry.is_symlink() and directory.resolve().is_relative_to(target):
                    refuse(
                        entry,
                        f"a symlink {{entry}} -> {os.readlink(entry)} to a directory above it: a copy would never end",
                        "remove the link (or point it at a directory that does not contain it)",
                    )
                pending.append(entry)
            else:
                _check_entry(entry, boundary, where, refuse)


def _check_entry(entry: Path, boundary: Path, where: str, refuse: Callable[[Path, str, str], NoReturn]) -> None:
    """A file a build will copy: a regular file with one name (a hard link's other names may be
    outside the project, and nothing says where), never a device, FIFO or socket."""
    info = entry.stat()
    if not stat.S_ISREG(info.st_mode):
        refuse(
            entry, "{entry}, not a regular file (a device, FIFO or socket)", "remove it: a build copies regular files"
        )
    if info.st_nlink > 1:
        refuse(
            entry,
            f"{{entry}}, a hard link with {info.st_nlink} names: the others may be outside {where} ({boundary})",
            "replace it with a copy (cp --remove-destination SRC DST), so the build copies only what is here",
        )


def _check_files(loaded: LoadedSpec, node: yaml.Node | None) -> None:
    """Every file a model names exists and stays inside the project: each kind checks its own."""
    checks: dict[type, Callable[[LoadedSpec, yaml.Node | None, int, Any], None]] = {
        OnnxModel: _onnx_files, PythonModel: _python_files, TensorRTModel: _tensorrt_files, LlmModel: _llm_files,
    }  # fmt: skip
    for index, model in enumerate(loaded.spec.models):
        check = checks.get(type(model))
        if check is not None:
            check(loaded, node, index, model)


def _refuse(loaded: LoadedSpec, node: yaml.Node | None, key: tuple[Any, ...], message: str, hint: str) -> SpecError:
    return SpecError(message, file=_where(loaded.path, node, key), key=_dotted(key), hint=hint)


def _onnx_files(loaded: LoadedSpec, node: yaml.Node | None, index: int, model: OnnxModel) -> None:
    """The variant's data, then the model file or the export's factory and the globs it depends on."""
    if model.variant is not None and model.variant.data is not None:
        data_key: tuple[Any, ...] = ("models", index, "variant", "data")
        _confine(loaded, node, data_key, model.variant.data)
        if not loaded.resolve(model.variant.data).exists():
            raise _refuse(
                loaded, node, data_key, f"variant data '{model.variant.data}' not found",
                "give the real inputs the variant is checked on: a .npy or .json file or a directory "
                "(spec-relative, inside the project)",
            )  # fmt: skip
    if model.file is not None:
        _require_file(loaded, node, ("models", index, "file"), model.file, "an existing .onnx file")
        return
    if model.export is None:
        return
    key: tuple[Any, ...] = ("models", index, "export", "factory")
    _require_file(loaded, node, key, model.export.factory_file, "the Python file that defines the factory")
    for position, pattern in enumerate(model.export.depends):
        key = ("models", index, "export", "depends", position)
        if Path(pattern).is_absolute():  # pathlib cannot glob these; they name host files anyway
            raise _refuse(loaded, node, key, f"pattern '{pattern}' is absolute", "give a glob relative to the spec")
        for match in loaded.root.glob(pattern):
            _confine(loaded, node, key, os.path.relpath(match, loaded.root))


def _python_files(loaded: LoadedSpec, node: yaml.Node | None, index: int, model: PythonModel) -> None:
    """The model directory with its model.py, and every asset (project files or a package's)."""
    key: tuple[Any, ...] = ("models", index, "path")
    _confine(loaded, node, key, model.path)
    if not (loaded.resolve(model.path) / "model.py").is_file():
        raise _refuse(
            loaded, node, key, f"'{model.path}' has no model.py",
            "point 'path' at a directory containing the Triton Python backend model.py",
        )  # fmt: skip
    for dest, source in model.assets.items():
        asset_key = ("models", index, "assets", dest)
        package_dir = _package_dir(source)
        if package_dir is not None:
            _confine(loaded, node, asset_key, str(package_dir / source.partition("/")[2]), inside=package_dir)
        elif not source.startswith("package:"):
            _confine(loaded, node, asset_key, source)
        if asset_path(loaded, source) is None:
            package = source.removeprefix("package:").split("/")[0]
            fix = f"pip install {package}" if source.startswith("package:") else "fix the path (spec-relative)"
            raise _refuse(loaded, node, asset_key, f"asset '{dest}': source '{source}' not found", fix)


def _tensorrt_files(loaded: LoadedSpec, node: yaml.Node | None, index: int, model: TensorRTModel) -> None:
    """The ONNX file and the calibration data, or the onnx model of this spec it is built from."""
    for field_name, rel in (("onnx", model.onnx), ("calibration", model.calibration)):
        if rel is not None:
            _require_file(loaded, node, ("models", index, field_name), rel, f"an existing {field_name} file")
    if model.from_model is None:
        return
    by_name = {m.name: m for m in loaded.spec.models}
    if not isinstance(by_name.get(model.from_model), OnnxModel):
        onnx_names = [n for n, m in by_name.items() if isinstance(m, OnnxModel)]
        raise _refuse(
            loaded, node, ("models", index, "from_model"), f"'{model.from_model}' is not an onnx model of this spec",
            did_you_mean(model.from_model, onnx_names) or "name a model with kind: onnx",
        )  # fmt: skip


def _llm_files(loaded: LoadedSpec, node: yaml.Node | None, index: int, model: LlmModel) -> None:
    """The transformers model directory and a tokenizer directory, when they are paths."""
    for field_name, rel, need in (("path", model.path, "config.json"), ("tokenizer", model.tokenizer, None)):
        if rel is None or (field_name == "tokenizer" and rel in ("auto", "byte")):
            continue
        key = ("models", index, field_name)
        _confine(loaded, node, key, rel)
        directory = loaded.resolve(rel)
        if not directory.is_dir() or (need and not (directory / need).is_file()):
            raise _refuse(
                loaded, node, key, f"'{rel}' is not a {'transformers model' if need else 'tokenizer'} directory",
                "point it at a local directory written by save_pretrained() (no downloads here)",
            )  # fmt: skip


def asset_path(loaded: LoadedSpec, source: str) -> Path | None:
    """Where an asset source lives (``package:NAME/sub`` or a spec-relative path); None if absent."""
    if source.startswith("package:"):
        package_dir = _package_dir(source)
        if package_dir is None:
            return None
        path = package_dir / source.partition("/")[2]
    else:
        path = loaded.resolve(source)
    return path if path.exists() else None


def _package_dir(source: str) -> Path | None:
    """The installed directory of the package a ``package:NAME/sub`` source names (resolved), or None."""
    if not source.startswith("package:"):
        return None
    import importlib.util

    name = source.removeprefix("package:").partition("/")[0]
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]).resolve()


def _with_step_files(loaded: LoadedSpec, node: yaml.Node | None) -> LoadedSpec:
    """Read every ensemble's ``steps_file`` into its ``steps`` (errors name that file and key)."""
    models: list[Any] = []
    for index, model in enumerate(loaded.spec.models):
        if isinstance(model, EnsembleModel) and model.steps_file is not None:
            key: tuple[Any, ...] = ("models", index, "steps_file")
            _require_file(loaded, node, key, model.steps_file, "a YAML list of ensemble steps")
            path = loaded.resolve(model.steps_file)
            try:
                data = yaml.safe_load(path.read_text())
                steps = TypeAdapter(list[EnsembleStep]).validate_python(data)
            except yaml.YAMLError as exc:
                raise SpecError(f"invalid YAML: {exc}", file=path, hint="fix the YAML syntax") from None
            except ValidationError as exc:
                error = exc.errors()[0]
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
                raise SpecError(
                    error["msg"],
                    file=path,
                    key=f"steps{where}",
                    hint="each step needs 'model', 'inputs' {step input: tensor} and 'outputs' {step output: tensor}",
                ) from None
            if not steps:
                raise SpecError("no steps", file=path, hint="list at least one step")
            model = model.model_copy(update={"steps": steps})
        models.append(model)
    spec = loaded.spec.model_copy(update={"models": models})
    return LoadedSpec(spec=spec, path=loaded.path)


def _require_file(loaded: LoadedSpec, node: yaml.Node | None, key: tuple[Any, ...], rel: str, what: str) -> None:
    _confine(loaded, node, key, rel)
    if not loaded.resolve(rel).is_file():
        raise SpecError(
            f"file '{rel}' not found (relative to {loaded.root})",
            file=_where(loaded.path, node, key),
            key=_dotted(key),
            hint=f"set it to {what}",
        )


def _spec_error(exc: ValidationError, path: Path, node: yaml.Node | None) -> SpecError:
    """Turn the first pydantic error into a SpecError with line, key path and hint."""
    error = exc.errors()[0]
    raw_loc = tuple(error["loc"])
    loc = tuple(part for part in raw_loc if part not in ("onnx", "python", "ensemble", "llm", "tensorrt"))
    key = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(loc[-1])
        known = _known_fields(raw_loc[:-1])
        suggestion = did_you_mean(unknown, known)
        return SpecError(
            f"unknown key '{unknown}'",
            file=_where(path, node, loc),
            key=key,
            hint=suggestion or f"allowed keys here: {', '.join(sorted(known))}",
        )
    if kind == "missing":
        return SpecError("required key is missing", file=_where(path, node, loc[:-1]), key=key, hint=f"add '{loc[-1]}'")
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return SpecError(
            "'kind' must be one of: onnx, python, ensemble, llm, tensorrt",
            file=_where(path, node, loc),
            key=f"{key}.kind" if key else "kind",
            hint="set kind: onnx (an .onnx file or a PyTorch export), python (a model.py directory) "
            "ensemble (steps over other models), llm (a causal language model with token streaming) "
            "or tensorrt (an engine built from ONNX)",
        )
    message = error["msg"].removeprefix("Value error, ")
    return SpecError(
        f"{message} (got {error.get('input')!r})" if kind != "value_error" else message,
        file=_where(path, node, loc),
        key=key,
        hint=_hint_for(kind, loc),
    )


def _hint_for(kind: str, loc: tuple[Any, ...]) -> str:
    field = str(loc[-1]) if loc else ""
    if field == "dtype":
        return f"use one of {', '.join(dtypes.CANONICAL)}"
    if kind.startswith("int") or kind.startswith("greater") or kind.startswith("less"):
        return f"set '{field}' to a whole number in range"
    if kind == "string_too_short" and field == "name":
        return "give the tensor the name its graph uses (Triton takes any non-empty name)"
    if kind == "string_pattern_mismatch":
        return "names use letters, digits, '_', '.', '-' (factories: 'path/file.py:function')"
    if kind.startswith("list"):
        return f"'{field}' takes a YAML list"
    return "see the spec reference in docs/reference/spec.md"


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (walks the pydantic models, following 'kind' tags)."""
    cls: Any = Spec
    tags = {
        "onnx": OnnxModel,
        "python": PythonModel,
        "ensemble": EnsembleModel,
        "llm": LlmModel,
        "tensorrt": TensorRTModel,
    }
    for part in loc:
        if isinstance(part, int):
            continue
        if part in tags:
            cls = tags[part]
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        cls = _model_in(annotation)
        if cls is None:
            return []
    return list(cls.model_fields) if cls is not None else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _where(path: Path, node: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """``file:line`` of the deepest YAML node along ``loc``."""
    line = None
    current = node
    for part in loc:
        if current is None:
            break
        line = current.start_mark.line + 1
        current = _child(current, part)
    if current is not None:
        line = current.start_mark.line + 1
    return f"{path}:{line}" if line else str(path)


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == part:
                return value_node
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None
