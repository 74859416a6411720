"""The JSON Schema of tritonkit.yaml: generated from the spec models, shipped, printed by
``tritonkit schema``, named by the starter spec; it accepts every spec in the repository and
rejects the bad-spec cases that are schema errors (spec/jsonschema.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from tritonkit.cli import main
from tritonkit.spec.jsonschema import SCHEMA_FILE, render_schema, shipped_schema, spec_schema
from tritonkit.spec.starter import STARTER_SCHEMA, STARTER_SPEC

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "cases"
# The bad-spec cases whose fault a schema can see (type, key, enum, length); every other case
# needs the files, the graph or cross-field rules, which the loader checks at build time.
SCHEMA_ERRORS = {"bad_dtype", "empty_tensor_name", "long_name", "unknown_key", "unknown_kind", "wrong_type"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(shipped_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = ROOT / "toolkit" / "tritonkit" / "spec" / SCHEMA_FILE
    if os.environ.get("TRITONKIT_UPDATE_GOLDEN"):
        shipped.write_text(render_schema())
    assert shipped_schema() == render_schema(), (
        "regenerate: TRITONKIT_UPDATE_GOLDEN=1 pytest tests/unit/test_spec_schema.py"
    )
    assert spec_schema()["$schema"].endswith("2020-12/schema")


def _specs() -> list[Path]:
    found = [*ROOT.joinpath("model_repository").glob("*.yaml"), *ROOT.joinpath("examples").rglob("*.yaml")]
    return sorted(p for p in found if isinstance(doc := yaml.safe_load(p.read_text()), dict) and "models" in doc)


def test_every_spec_in_the_repository_is_valid(validator: jsonschema.protocols.Validator) -> None:
    specs = _specs()
    assert len(specs) >= 4  # the example project's specs at least
    for path in specs:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], path
    starter = yaml.safe_load(STARTER_SPEC)
    assert list(validator.iter_errors(starter)) == []


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.name != "invalid_yaml"))
def test_bad_spec_cases_that_are_schema_errors_are_rejected(
    case: str, validator: jsonschema.protocols.Validator
) -> None:
    doc = yaml.safe_load((CASES / case / "tritonkit.yaml").read_text())
    rejected = any(True for _ in validator.iter_errors(doc))
    assert rejected == (case in SCHEMA_ERRORS)


def test_init_names_the_schema_and_schema_prints_it(tmp_path: Path) -> None:
    target = tmp_path / "project" / "tritonkit.yaml"
    assert CliRunner().invoke(main, ["init", str(target)]).exit_code == 0
    assert target.read_text().splitlines()[0] == f"# yaml-language-server: $schema={STARTER_SCHEMA}"
    assert (target.parent / STARTER_SCHEMA).read_text() == shipped_schema()
    printed = CliRunner().invoke(main, ["schema"])
    assert printed.exit_code == 0 and json.loads(printed.output) == json.loads(shipped_schema())
