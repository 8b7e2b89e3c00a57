"""The framework: command line, composing configs, one run start to end, the run contract, reporting,
sweeps, schemas and validation, errors, checkpoints and interruptions; the registry of names (torch-free)."""
