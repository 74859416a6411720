"""tritonkit's LLM backend (model.py + engine.py), copied into each llm model's version directory."""
