"""Check KServe documents against the kserve SDK's models (run by the SDK's own interpreter).

The kserve SDK cannot be imported next to tritonclient.grpc (docs/architecture.md), so the tests run this
file with the separate ``.venv-kserve`` interpreter: it reads JSON documents on stdin, builds
each into the SDK's model classes field by field (camelCase keys through ``attribute_map``,
nested types through ``openapi_types``, Kubernetes core types from ``kubernetes.client``), and
prints every key the SDK does not know, plus constructor errors, as JSON on stdout.
"""

import json
import re
import sys

import kserve.models as kserve_models
import kubernetes.client.models as core_models

PRIMITIVES = {"str", "int", "float", "bool", "object", "datetime", "date"}
KINDS = {"InferenceService": "V1beta1InferenceService", "ServingRuntime": "V1alpha1ServingRuntime"}


def build(data, klass, path, problems):
    inner = re.match(r"^(?:List\[|list\[)(.*)\]$", klass)
    if inner:
        return [build(item, inner.group(1), f"{path}[{i}]", problems) for i, item in enumerate(data)]
    inner = re.match(r"^(?:Dict\[str, |dict\(str, )(.*)[\])]$", klass)
    if inner:
        return {key: build(value, inner.group(1), f"{path}.{key}", problems) for key, value in data.items()}
    if klass in PRIMITIVES or klass.startswith("V1Quantity"):
        return data
    cls = getattr(kserve_models, klass, None) or getattr(core_models, klass, None)
    if cls is None:
        return data  # a type the SDK leaves open
    if not isinstance(data, dict):
        problems.append(f"{path}: expected an object for {klass}, got {type(data).__name__}")
        return None
    known = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            problems.append(f"{path}.{key}: not a field of {klass}")
            continue
        kwargs[known[key]] = build(value, cls.openapi_types[known[key]], f"{path}.{key}", problems)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{path}: {klass}: {exc}")
        return None


def main():
    report = []
    for document in json.load(sys.stdin):
        problems = []
        build(document, KINDS[document["kind"]], document["kind"], problems)
        report.append({"kind": document["kind"], "problems": problems})
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
