"""Post-processing for the demo classifier (Triton Python backend).

Input ``logits`` (FP32, [3]) -> outputs ``probabilities`` (FP32, [3], softmax) and ``label``
(BYTES, [1], the class name). Handles a whole dynamic batch in one numpy call.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

LABELS = np.array([b"setosa", b"versicolor", b"virginica"], dtype=object)


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        logits = [pb_utils.get_input_tensor_by_name(r, "logits").as_numpy() for r in requests]
        sizes = [x.shape[0] for x in logits]
        batch = np.concatenate(logits, axis=0).astype(np.float64)
        exp = np.exp(batch - batch.max(axis=1, keepdims=True))
        probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        labels = LABELS[probabilities.argmax(axis=1)].reshape(-1, 1)
        responses = []
        start = 0
        for size in sizes:
            end = start + size
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("probabilities", probabilities[start:end]),
                        pb_utils.Tensor("label", labels[start:end]),
                    ]
                )
            )
            start = end
        return responses
