"""Command-line tools over finished runs: load a run, rank its channels, attack its position channels."""
