"""``python -m posenc.tools.rank_channels``: the public name of :mod:`posenc.cli.rank_channels` (kept as published)."""

from posenc.cli.rank_channels import main

if __name__ == "__main__":
    raise SystemExit(main())
