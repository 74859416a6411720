"""Stage 5: numbered, immutable releases and their OCI images (publish / pull).

See docs/architecture.md for what this package may import.
"""
