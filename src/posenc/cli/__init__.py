"""The command line, the top layer: ``train.py`` and ``sweep.py``'s argument handling and the analysis
commands over finished runs (load a run, rank its channels, attack its position channels)."""
