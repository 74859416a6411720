"""The commented starter spec that ``tritonkit init`` writes, and where it writes the schema its
first line names (editors with the YAML language server complete and check the spec from it)."""

STARTER_SCHEMA = ".tritonkit/tritonkit.schema.json"

STARTER_SPEC = (
    f"# yaml-language-server: $schema={STARTER_SCHEMA}\n"
    + """\
# tritonkit.yaml — what `tritonkit build` turns into a Triton model repository.
# Paths are relative to this file. Reference: docs/reference/spec.md in the tritonkit repository.
version: 1
name: my-models            # the repository name: build writes <out>/<name>-<digest12>/

models:
  # An ONNX model from a file. Inputs/outputs are read from the graph; declare them to
  # have them checked (dims exclude the batch dimension when max_batch_size > 0).
  - name: my_onnx_model
    kind: onnx
    file: models/model.onnx
    max_batch_size: 16
    dynamic_batching:
      max_queue_delay_microseconds: 1000   # how long Triton may wait to fill a batch
      preferred_batch_size: [4, 8]
    instance_group:
      - {count: 1, kind: KIND_CPU}
    model_warmup:
      - {name: warmup, batch_size: 1, data: random}

  # An ONNX model exported from a PyTorch factory (a function returning an nn.Module).
  # After export onnxruntime and PyTorch run the same random batch; the build fails if
  # they differ by more than atol + rtol * |torch|.
  # - name: my_torch_model
  #   kind: onnx
  #   export:
  #     factory: models/net.py:build_model
  #     inputs:
  #       - {name: image, dtype: FP32, dims: [3, 32, 32]}
  #     outputs: [logits]
  #     opset: 17
  #     rtol: 1.0e-3
  #     atol: 1.0e-5
  #   max_batch_size: 32

  # A Python-backend model: a directory with Triton's model.py, plus its I/O.
  # - name: my_python_model
  #   kind: python
  #   path: models/my_python_model
  #   max_batch_size: 16
  #   inputs:
  #     - {name: INPUT0, dtype: FP32, dims: [-1]}
  #   outputs:
  #     - {name: OUTPUT0, dtype: FP32, dims: [-1]}
  #   parameters: {threshold: 0.5}
"""
)
