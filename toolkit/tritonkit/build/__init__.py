"""Stage 2: spec → repository. The build pipeline, model configs, ensembles, builders per kind, verify.

See docs/architecture.md for what this package may import.
"""
