"""The analysis commands under their published names (``python -m posenc.tools.rank_channels``,
``python -m posenc.tools.attack``); the code lives in :mod:`posenc.cli`."""
