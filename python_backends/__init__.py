"""Code that runs inside Triton's Python backend stub (never imports tritonkit)."""
