"""Data shipped with fusedrnn: the demo's training text (see README.md here)."""
