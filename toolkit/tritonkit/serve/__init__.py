"""Stage 3: a real Triton over a repository. The server process, backends, the repository API, clients.

See docs/architecture.md for what this package may import.
"""
