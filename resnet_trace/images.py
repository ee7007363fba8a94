"""Images through Pillow (the optional ``images`` extra): PNG, JPEG, WebP and BMP, size-checked first.

Pillow reads the header on ``Image.open``; the pixel count is checked against a limit derived
from the memory guard *before* ``load()`` decodes anything, and Pillow's own decompression-bomb
check is made an error, never a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from resnet_trace.errors import UsageError
from resnet_trace.memory import check_read

SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
#: The most pixels an image may hold, whatever the memory: 64 megapixels (8192 x 8192).
MAX_PIXELS = 8192 * 8192
INSTALL = "pip install 'resnet-trace[images]'"


def read_image(
    fh: BinaryIO,
    path: Path,
    channels: int | None = None,
    *,
    what: str = "--input-file",
    check_shape: Callable[[tuple[int, ...]], object] | None = None,
) -> torch.Tensor:
    """The image open as ``fh`` (named ``path``) as a 1xCxHxW float32 tensor in [0, 1].

    Grayscale ("L") when ``channels`` is 1, else RGB. ``check_shape`` is called with the
    1xCxHxW shape read from the header, before any pixel is decoded.
    """
    expected = SUFFIXES.get(path.suffix.lower(), "image")
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(f"{what} {str(path)!r}: reading images needs Pillow ({INSTALL})") from None
    mode, bands = ("L", 1) if channels == 1 else ("RGB", 3)
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # Pillow errors at twice this, warns (an error here) above it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh, formats=sorted(set(SUFFIXES.values()))) as img:
                width, height = img.size
                if width < 1 or height < 1:
                    raise UsageError(f"{what} {str(path)!r} is an image of {width}x{height} pixels")
                if width * height > MAX_PIXELS:
                    raise UsageError(
                        f"{what} {str(path)!r} is an image of {width}x{height} pixels, over the limit of "
                        f"{MAX_PIXELS:,} pixels"
                    )
                # Decoded pixels (up to 4 bytes each while converting), their copy and the floats.
                check_read(
                    width * height * (4 + bands + 4 * bands), f"{what} {str(path)!r} ({width}x{height})"
                )
                if check_shape is not None:
                    check_shape((1, bands, height, width))
                img.load()
                data = img.convert(mode).tobytes()
    except UsageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UsageError(f"{what} {str(path)!r} was refused as a decompression bomb: {exc}") from None
    except MemoryError:
        raise UsageError(f"{what} {str(path)!r} does not fit in memory") from None
    except Exception as exc:  # UnidentifiedImageError, truncated data, a broken header: the file's fault
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, Image.UnidentifiedImageError):
            first = f"Pillow cannot identify it as {', '.join(sorted(set(SUFFIXES.values())))}"
        raise UsageError(f"{what} {str(path)!r} is not a readable {expected} image: {first[:200]}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    if len(data) != width * height * bands:
        raise UsageError(f"{what} {str(path)!r}: the decoder returned {len(data)} bytes for {width}x{height}")
    pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(height, width, bands)
    return pixels.permute(2, 0, 1).unsqueeze(0).float().div_(255.0).contiguous()
