"""A stand-in for torchvision (see ../sitecustomize.py): importable, never called."""

__version__ = "0.0.0+stand-in"
