"""The intent scene's model (Triton Python backend): echoes ``x`` after ``DELAY`` seconds per batch.

Release v1 uses the file as it is; the scene writes a copy with a longer delay for v2, "a slower
model" that breaks the SLO under traffic.
"""

import time

import triton_python_backend_utils as pb_utils

DELAY = 0.002


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(DELAY)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
            for r in requests
        ]
