"""The networks: backbones (torchvision, timm, user modules) and their taps, padding schemes, PosENet
readouts, task heads, PermuteNet's permutation, receptive fields, losses."""
