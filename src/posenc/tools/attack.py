"""``python -m posenc.tools.attack``: the public name of :mod:`posenc.cli.attack` (kept as published)."""

from posenc.cli.attack import main

if __name__ == "__main__":
    raise SystemExit(main())
