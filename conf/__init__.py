"""posenc's Hydra configs, shipped inside the package (``pkg://posenc.conf``); the YAML files are the content."""
