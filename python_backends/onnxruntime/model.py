"""A Python-based Triton backend named ``onnxruntime``: serves ``model.onnx`` with onnxruntime.

Triton loads this file for every model whose config says ``backend: "onnxruntime"`` when the
backend directory holds ``onnxruntime/model.py`` instead of ``libtriton_onnxruntime.so``. That
lets a repository built for NGC Triton (native ONNX Runtime backend) run unchanged on the CPU-only
Triton embedded in the ``nvidia-pytriton`` wheel.

Behaviour:
- The model file is ``<model>/<version>/<default_model_filename or model.onnx>``.
- A dynamic batch is executed as **one** onnxruntime call: the requests' inputs are
  concatenated along the batch axis (per group of requests whose non-batch shapes agree) and the
  outputs are split back by each request's batch size.
- Inputs and outputs follow the model config: names are checked at load time against the
  graph, outputs are cast to the configured dtype and only requested outputs are returned.
- A scalar (rank-0) tensor of a non-batching model is declared ``dims: [1]`` (Triton refuses
  an empty ``reshape`` there): it is squeezed on the way in and given shape ``[1]`` on the way
  out. Batching models use ``reshape { shape: [] }`` for rank-1 tensors, which Triton applies.
- Custom metrics ``tritonkit_onnxruntime_runs_total`` (session runs) and
  ``tritonkit_onnxruntime_rows_total`` (batch rows through them) show on Triton's metrics
  endpoint how well dynamic batches are being used.
- Parameters ``intra_op_thread_count`` / ``inter_op_thread_count`` are honoured as in the
  native backend; thread spinning is disabled so several instances can share few cores.

This file runs inside Triton's Python stub and must not import tritonkit.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One onnxruntime InferenceSession per model instance."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        filename = self.config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: model file not found: {path}")

        options = ort.SessionOptions()
        params = {k: v.get("string_value", "") for k, v in self.config.get("parameters", {}).items()}
        if params.get("intra_op_thread_count"):
            options.intra_op_num_threads = int(params["intra_op_thread_count"])
        if params.get("inter_op_thread_count"):
            options.inter_op_num_threads = int(params["inter_op_thread_count"])
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        self.inputs = [i["name"] for i in self.config.get("input", [])]
        self.output_types = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in self.config.get("output", [])
        }
        graph_inputs = {i.name for i in self.session.get_inputs()}
        # A rank-0 (scalar) tensor of a non-batching model is declared with dims [1] (Triton
        # refuses an empty reshape there), as the native backend does: squeeze in, expand out.
        self.scalar_inputs = {i.name for i in self.session.get_inputs() if i.shape == []}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        unknown = [n for n in self.inputs if n not in graph_inputs] + [
            n for n in self.output_types if n not in graph_outputs
        ]
        if unknown:
            raise pb_utils.TritonModelException(
                f"{self.name}: config names tensors the ONNX graph does not have: {unknown}"
            )
        # Labels unique to this stub process: Triton shares one Metric between processes that
        # ask for the same family and labels, and frees it with the first family destroyed, so
        # a reload (old and new instance overlap) would leave the new one a dangling counter and
        # crash the server (triton-inference-server/server#8663).
        labels = {
            "model": self.name,
            "version": str(args["model_version"]),
            "instance": f"{args['model_instance_name']}.{os.getpid()}",
        }
        # The families must outlive their metrics, so both are kept on the instance.
        self.run_family = pb_utils.MetricFamily(
            name="tritonkit_onnxruntime_runs_total",
            description="onnxruntime session runs (one per executed batch group)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.row_family = pb_utils.MetricFamily(
            name="tritonkit_onnxruntime_rows_total",
            description="batch rows executed through onnxruntime",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.runs = self.run_family.Metric(labels=labels)
        self.rows = self.row_family.Metric(labels=labels)
        pb_utils.Logger.log_info(f"onnxruntime {ort.__version__}: loaded {path}")

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
            except Exception as exc:  # a bad request fails alone, not its batch
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            if self.max_batch_size > 0:
                signature = tuple((name, array.shape[1:]) for name, array in feeds.items())
            else:
                signature = ("request", index)
            groups.setdefault(signature, []).append((index, request, feeds))

        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def _feeds(self, request):
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                continue  # optional input not sent
            array = tensor.as_numpy()
            if name in self.scalar_inputs and array.shape == (1,):
                array = array.reshape(())
            if array.dtype == np.object_:
                array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
            feeds[name] = array
        return feeds

    def _run_group(self, members, responses):
        wanted = set()
        for _, request, _ in members:
            wanted.update(request.requested_output_names() or self.output_types)
        names = [n for n in self.output_types if n in wanted] or list(self.output_types)
        if len(members) == 1:
            feeds = members[0][2]
            sizes = None
        else:
            feeds = {name: np.concatenate([m[2][name] for m in members], axis=0) for name in members[0][2]}
            sizes = [next(iter(m[2].values())).shape[0] for m in members]
        try:
            outputs = self.session.run(names, feeds)
        except Exception as exc:
            for index, _, _ in members:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {exc}"))
            return
        self.runs.increment(1)
        rows = int(next(iter(feeds.values())).shape[0]) if feeds and self.max_batch_size > 0 else 1
        self.rows.increment(rows)
        if sizes is None:
            parts = [outputs]
        else:
            cuts = np.cumsum(sizes)[:-1]
            split = [np.split(out, cuts, axis=0) for out in outputs]
            parts = [[column[i] for column in split] for i in range(len(members))]
        for (index, request, _), values in zip(members, parts):
            requested = set(request.requested_output_names() or names)
            tensors = [
                pb_utils.Tensor(name, self._output(value, name))
                for name, value in zip(names, values)
                if name in requested
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)

    def _output(self, value, name):
        array = np.asarray(value).astype(self.output_types[name], copy=False)
        if array.ndim == 0 and self.max_batch_size == 0:
            array = array.reshape((1,))  # a scalar output is declared as dims [1]
        return array

    def finalize(self):
        self.runs = self.rows = None  # metrics before their families
        self.run_family = self.row_family = None
        self.session = None
