"""The repository format every stage shares: content hashes, the lock file, read-only layout on disk.

See docs/architecture.md for what this package may import.
"""
