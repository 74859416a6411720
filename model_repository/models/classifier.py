"""A small tabular classifier for the demo: 4 features -> 3 class logits.

``build_model`` trains an MLP for a fraction of a second on synthetic, well-separated
Gaussian blobs (one per class), so the demo's answers are meaningful and checkable: a sample
near centre *k* is classified as class *k*. Training is deterministic (fixed seed, one
thread), so two builds export byte-identical ONNX files.
"""

from __future__ import annotations

import torch
from torch import nn

CENTRES = torch.tensor(
    [
        [2.0, 0.0, 0.0, 1.0],  # class 0: "setosa"
        [0.0, 2.0, 1.0, 0.0],  # class 1: "versicolor"
        [0.0, 0.0, 2.0, 2.0],  # class 2: "virginica"
    ]
)


def build_model() -> nn.Module:
    generator = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        labels = torch.arange(3).repeat_interleave(64)
        features = CENTRES[labels] + 0.4 * torch.randn(len(labels), 4, generator=generator)
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(200):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(features), labels)
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
