"""Stage 1, the input: the tritonkit.yaml schema, its loader, YAML write-back, the starter spec, dtypes.

See docs/architecture.md for what this package may import.
"""

SPEC_FILE = "tritonkit.yaml"
"""The spec's default file name (a constant here, so the CLI can name it without importing the schema)."""
