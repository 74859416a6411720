"""Vendor KServe's ServingRuntime and InferenceService CRD schemas into tritonkit.

Reads ``config/crd/full/`` at one tag of a kserve git checkout (or bare mirror), keeps each
CRD's ``openAPIV3Schema`` with the group, version and kind it serves, and writes it as gzipped
canonical JSON (sorted keys, no timestamp in the gzip header, so a rerun is byte-identical)
under ``toolkit/tritonkit/manifests/crds/``. Prints the source blobs' SHA-256 for the README there.

Usage: ``python tools/vendor_kserve_crds.py GIT_DIR TAG``, e.g.
``python tools/vendor_kserve_crds.py ~/src/kserve/.git v0.20.0``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

FILES = {
    "servingruntimes": "config/crd/full/serving.kserve.io_servingruntimes.yaml",
    "inferenceservices": "config/crd/full/serving.kserve.io_inferenceservices.yaml",
}
OUT = Path(__file__).parents[1] / "toolkit" / "tritonkit" / "deploy" / "crds"


def main(git_dir: str, tag: str) -> None:
    commit = subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", f"{tag}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"kserve {tag} = {commit}")
    for name, path in FILES.items():
        raw = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], capture_output=True, check=True)
        crd = yaml.safe_load(raw.stdout)
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        reduced = {
            "group": crd["spec"]["group"],
            "version": version["name"],
            "kind": crd["spec"]["names"]["kind"],
            "openAPIV3Schema": version["schema"]["openAPIV3Schema"],
        }
        data = json.dumps(reduced, sort_keys=True, separators=(",", ":")).encode()
        target = OUT / f"{name}.json.gz"
        with target.open("wb") as sink, gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as out:
            out.write(data)
        print(f"{path}  sha256 {hashlib.sha256(raw.stdout).hexdigest()}  ->  {target.name}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
