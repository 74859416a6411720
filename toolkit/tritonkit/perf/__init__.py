"""Stage 4: measurement. Window statistics, the load generator, bench, tune, reports.

See docs/architecture.md for what this package may import.
"""
