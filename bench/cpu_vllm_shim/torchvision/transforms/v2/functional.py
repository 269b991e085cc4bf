"""torchvision.transforms.functional: importable; calling a function says this is a stand-in."""

from torchvision.transforms import InterpolationMode  # noqa: F401


def __getattr__(name: str):
    def missing(*args: object, **kwargs: object) -> None:
        raise NotImplementedError(f"torchvision stand-in: transforms.functional.{name} is not available")

    return missing
