"""Names transformers imports from torchvision.io; calling one says that this is a stand-in."""


class ImageReadMode:
    UNCHANGED = 0
    GRAY = 1
    GRAY_ALPHA = 2
    RGB = 3
    RGB_ALPHA = 4


def __getattr__(name: str):
    def missing(*args: object, **kwargs: object) -> None:
        raise NotImplementedError(f"torchvision stand-in: io.{name} is not available")

    return missing
