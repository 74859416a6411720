"""`make demo`: build the example repository, serve it on the embedded Triton, query it, stop.

Sends real requests with tritonclient over HTTP and gRPC: the classifier (ONNX, exported from
PyTorch) on one sample near each class centre, then the Python post-processing model on the
logits, and a burst of concurrent gRPC requests to show dynamic batching in Triton's
statistics. Then a tiny random-init language model (llm.yaml) streams tokens, and eight
concurrent requests share its in-flight batch. Last, the text-embedding service
(embeddings.yaml: tokenizer -> all-MiniLM-L6-v2 in ONNX -> pooling, one ensemble) embeds
raw sentences and prints their cosine similarities. Last, intent (intent.yaml): the spec's SLO
sets tune's budget, tune records the capacity it measured, the plan sizes replicas from it, and a
slower v2 promoted under traffic with analysis is rolled back automatically, with the evidence.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from rich.console import Console
from rich.table import Table

from tritonkit import BuildResult, Endpoints, TritonkitError, TritonServer, build_repository, load_spec
from tritonkit.build.verify import verify
from tritonkit.serve.llm_client import LlmStream

HERE = Path(__file__).resolve().parent
console = Console()


def _features(samples: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("features", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples)
    return tensor


def _build(spec_file: str, what: str) -> BuildResult:
    """Build one spec of this directory into dist/, with progress, and say where it went."""
    with console.status(f"building {what}…") as status:
        result = build_repository(
            load_spec(HERE / spec_file),
            HERE / "dist",
            progress=lambda event: status.update(f"{event.subject}: {event.message}"),
        )
    console.print(f"built [bold]{result.path.name}[/] ({result.digest}) in {result.seconds:.2f}s")
    return result


@contextmanager
def _served(result: BuildResult, what: str) -> Iterator[Endpoints]:
    """The embedded Triton on free loopback ports for the block; stopped (and said so) after it."""
    endpoints = Endpoints.allocate()
    with console.status(f"starting {what}…"):
        server = TritonServer(result.path, endpoints=endpoints)
        server.start()
    try:
        yield endpoints
    finally:
        code = server.stop()
        console.print(f"Triton stopped (exit code {code})")


def main() -> int:
    result = _build("tritonkit.yaml", "the example repository")
    report = verify(result.path)
    console.print(f"verify: {'ok' if report.ok else report.findings}")

    with _served(result, "the embedded Triton") as endpoints:
        console.print(
            f"Triton ready: HTTP {endpoints.http_url}  gRPC {endpoints.grpc_url}  metrics {endpoints.metrics_url}"
        )
        samples = np.array([[2.1, 0.1, -0.2, 0.9], [0.1, 1.8, 1.2, 0.0], [0.0, 0.2, 2.1, 1.9]], dtype=np.float32)

        http = httpclient.InferenceServerClient(endpoints.http_url.removeprefix("http://"))
        features = httpclient.InferInput("features", list(samples.shape), "FP32")
        features.set_data_from_numpy(samples)
        logits = http.infer("classifier", [features]).as_numpy("logits")

        grpc = grpcclient.InferenceServerClient(endpoints.grpc_url)
        logit_input = grpcclient.InferInput("logits", list(logits.shape), "FP32")
        logit_input.set_data_from_numpy(logits)
        answer = grpc.infer("postprocess", [logit_input])
        probabilities, labels = answer.as_numpy("probabilities"), answer.as_numpy("label")

        table = Table(title="classifier (HTTP) → postprocess (gRPC)", title_justify="left")
        for column in ("features", "logits", "probabilities", "label"):
            table.add_column(column)
        for row in range(len(samples)):
            table.add_row(
                np.array2string(samples[row], precision=1),
                np.array2string(logits[row], precision=2),
                np.array2string(probabilities[row], precision=3),
                labels[row][0].decode(),
            )
        console.print(table)

        ensemble = grpc.infer("classify", [_features(samples)])  # the same two steps, run by Triton in one call
        chained = [label[0].decode() for label in ensemble.as_numpy("label")]
        same = chained == [label[0].decode() for label in labels]
        console.print(f"ensemble 'classify' (one gRPC call, raw features in): {chained} — same as the chain: {same}")

        def one(_: int) -> None:
            grpc.infer("classifier", [_features(samples[:1])])

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(64)))
        stats = grpc.get_inference_statistics("classifier", as_json=True)["model_stats"][0]
        batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}
        console.print(
            f"64 concurrent gRPC requests → executed batch sizes (size: count): {dict(sorted(batches.items()))}"
        )
        http.close()
        grpc.close()
    return llm_demo() or embeddings_demo() or intent_demo()


def llm_demo() -> int:
    """Build and serve llm.yaml; stream one answer, then run eight requests in one batch."""
    result = _build("llm.yaml", "the language model")
    with _served(result, "Triton with the LLM backend") as endpoints:
        greedy = {"temperature": 0, "ignore_eos": True}
        console.print("streamed (random weights, so the text is noise; bytes shown escaped): ", end="")
        with LlmStream(endpoints.grpc_url, "tiny-gpt2") as conn:
            conn.send(
                "Once upon a time",
                {"max_tokens": 24, **greedy},
                on_text=lambda t: console.print(repr(t)[1:-1], end="", markup=False, highlight=False),
            )
            first = conn.wait(60)
        console.print(
            f"\n  → {first.finish_reason}, {first.output_tokens} tokens in {len(first.chunks)} responses, "
            f"first after {1000 * (first.ttft or 0):.0f} ms"
        )
        streams = [LlmStream(endpoints.grpc_url, "tiny-gpt2") for _ in range(8)]
        try:
            runs = [s.send(f"request {i}", {"max_tokens": 16 * (i + 1), **greedy}) for i, s in enumerate(streams)]
            for s in streams:
                s.wait(120)
        finally:
            for s in streams:
                s.close()
        table = Table(title="8 concurrent requests, one in-flight batch", title_justify="left")
        for column in ("request", "tokens", "first token ms", "done ms", "error"):
            table.add_column(column)
        start = min(r.sent_at for r in runs)
        for i, r in enumerate(runs):
            table.add_row(
                str(i),
                str(r.output_tokens),
                f"{1000 * (r.ttft or 0):.0f}",
                f"{1000 * ((r.done_at or start) - start):.0f}",
                r.error or "",
            )
        console.print(table)
        console.print("short requests finish early and long ones keep going: no request waits for the batch")
        failed = [r for r in [first, *runs] if r.error or r.finals != 1]
    return 1 if failed else 0


def embeddings_demo() -> int:
    """Build and serve embeddings.yaml; embed sentences in one call to the `embed` ensemble."""
    result = _build("embeddings.yaml", "the embedding pipeline (ONNX export of MiniLM)")
    with _served(result, "Triton with the embedding ensemble") as endpoints:
        sentences = ["A cat sits on the mat.", "A kitten rests on a rug.", "Triton serves models on GPUs."]
        grpc = grpcclient.InferenceServerClient(endpoints.grpc_url)
        text = grpcclient.InferInput("text", [len(sentences), 1], "BYTES")
        text.set_data_from_numpy(np.array([[s.encode()] for s in sentences], dtype=object))
        vectors = grpc.infer("embed", [text]).as_numpy("embedding")
        grpc.close()
        table = Table(
            title=f"ensemble 'embed': {vectors.shape[1]}-d embeddings, cosine similarity", title_justify="left"
        )
        table.add_column("")
        for i in range(len(sentences)):
            table.add_column(str(i))
        for i, sentence in enumerate(sentences):
            table.add_row(f"{i} {sentence}", *(f"{float(vectors[i] @ vectors[j]):.2f}" for j in range(len(sentences))))
        console.print(table)
    return 0


def intent_demo() -> int:
    """SLO -> tune -> plan -> promote a slower v2 under traffic -> automatic rollback."""
    import shutil
    import tempfile
    import threading
    import time

    from tritonkit.deploy.local import LocalEnvironment
    from tritonkit.errors import PromoteError
    from tritonkit.perf.tune import tune
    from tritonkit.release.store import ReleaseStore
    from tritonkit.slo.plan import plan_spec
    from tritonkit.spec.update import update_settings

    with tempfile.TemporaryDirectory(prefix="tritonkit-intent-") as scratch_name:
        project = Path(scratch_name) / "project"
        (project / "models").mkdir(parents=True)
        shutil.copytree(HERE / "models" / "echo", project / "models" / "echo")
        spec_file = project / "tritonkit.yaml"
        shutil.copyfile(HERE / "intent.yaml", spec_file)
        slo = load_spec(spec_file).spec.model("echo").slo
        console.print(f"[bold]intent[/]: echo's SLO {slo.model_dump(exclude_none=True) if slo else None}")
        first = build_repository(load_spec(spec_file), project / "dist")
        with _served(first, "Triton for tune") as endpoints, console.status("tune: budget from slo.p99_ms …"):
            result = tune("echo", p99_ms=slo.p99_ms if slo and slo.p99_ms else 60, url=endpoints.grpc_url,
                          budget_s=45, max_points=8, confirm_pairs=1)  # fmt: skip
        if result.best is None:
            console.print("tune found nothing within the budget on this host; skipping the rest of the scene")
            return 0
        capacity = result.capacity()
        update_settings(spec_file, "echo", result.best.settings, capacity=capacity).write()
        console.print(f"tune: {result.best.settings.label()} sustains {capacity['rps'] if capacity else '?'}/s "
                      f"within p99 {result.p99_ms:g} ms; capacity written into the spec")  # fmt: skip
        plan = plan_spec(load_spec(spec_file).spec, None)
        queue = plan.models[0].queue
        admission = f"refused after {queue.timeout_us / 1000:g} ms queued" if queue else "none"
        console.print(f"plan: peak 400/s → [bold]{plan.replicas} replica(s)[/]; admission: {admission}; "
                      f"autoscale on {plan.models[0].target_concurrency} in flight per replica")  # fmt: skip
        store = ReleaseStore(project / "releases")
        good = store.create(build_repository(load_spec(spec_file), project / "dist").path)[0]
        slow = project / "models" / "echo" / "model.py"
        slow.write_text(slow.read_text().replace("DELAY = 0.002", "DELAY = 0.15"))  # v2: a slower model
        bad = store.create(build_repository(load_spec(spec_file), project / "dist").path)[0]
        env = LocalEnvironment(store)
        endpoints = Endpoints.allocate()
        with TritonServer(env.prepare(), endpoints=endpoints, models=[]):
            env.url, env.metrics_url = endpoints.http_url.removeprefix("http://"), endpoints.metrics_url
            env.promote(good.number)
            stop = threading.Event()

            def traffic() -> None:
                client = grpcclient.InferenceServerClient(endpoints.grpc_url)
                tensor = grpcclient.InferInput("x", [1, 1], "FP32")
                tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
                while not stop.is_set():
                    try:
                        client.infer("echo", [tensor])
                    except Exception:  # refused by the queue policy: the analysis counts it as an error
                        time.sleep(0.01)
                client.close()

            sender = threading.Thread(target=traffic)
            sender.start()
            try:
                with console.status(f"promote {bad.name} with --analysis 4s under traffic …"):
                    env.promote(bad.number, analysis_s=4)
                console.print(f"[red]{bad.name} stayed: the analysis did not catch the slower model[/]")
            except PromoteError as exc:
                console.print(f"promote {bad.name}: [bold red]rolled back[/] — {exc.message}", highlight=False)
            finally:
                stop.set()
                sender.join()
            last = env.history()[-1]
            console.print(f"history: {last.action} → serves {last.to_release} ({last.outcome})", highlight=False)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TritonkitError as exc:
        console.print(f"[red]error:[/] {exc.message}\n[cyan]hint:[/] {exc.hint}")
        sys.exit(exc.exit_code)
