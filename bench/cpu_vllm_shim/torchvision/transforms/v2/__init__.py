"""torchvision.transforms.v2: importable."""

from torchvision.transforms import InterpolationMode  # noqa: F401
