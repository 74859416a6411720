"""Triton Python model: mean pooling over real tokens, then L2 normalisation (sentence-transformers' head)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "token_embeddings").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy().astype(np.float32)
            summed = (tokens * mask[..., None]).sum(axis=1)
            mean = summed / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
            norm = np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
            embedding = (mean / norm).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("embedding", embedding)]))
        return responses
