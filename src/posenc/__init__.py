"""posenc: where do CNNs get absolute position from, and what does it cost them?"""

__version__ = "0.1.0"
