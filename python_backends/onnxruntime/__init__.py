"""A Python-based Triton backend named ``onnxruntime`` (see model.py)."""
