"""A small PNG reader (standard library only) for ``run --input-file image.png``.

Reads non-interlaced 8-bit greyscale, grey+alpha, RGB and RGBA images and returns
rows of RGB bytes; alpha is dropped, greyscale is repeated over three channels.
Anything else (palette, 16-bit, interlaced) is refused with a reason. JPEG would need
a real decoder, so it is not read: convert such images to PNG or ``.npy`` first.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


class PNGError(ValueError):
    """The file is not a PNG this reader handles."""


def _chunks(data: bytes):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise PNGError("truncated chunk")
        yield kind, body
        pos += 12 + length


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """Return (height, width, RGB bytes in row-major HWC order)."""
    if not data.startswith(SIGNATURE):
        raise PNGError("not a PNG file")
    header = None
    idat = bytearray()
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise PNGError("no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace:
        raise PNGError(
            f"only 8-bit, non-interlaced grey/RGB(A) PNGs are read (this one: depth {depth}, "
            f"colour type {colour}, interlace {interlace})"
        )
    if width * height > 64 * 1024 * 1024:
        raise PNGError(f"{width}x{height} is too large an image")
    bpp = CHANNELS[colour]
    stride = width * bpp
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as exc:
        raise PNGError(f"corrupt image data ({exc})") from None
    if len(raw) < height * (stride + 1):
        raise PNGError("truncated image data")
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        elif ftype != 0:
            raise PNGError(f"unknown filter type {ftype}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    if bpp == 3:
        return height, width, bytes(out)
    rgb = bytearray(height * width * 3)
    for p in range(height * width):
        if bpp in (1, 2):
            g = out[p * bpp]
            rgb[3 * p : 3 * p + 3] = bytes((g, g, g))
        else:
            rgb[3 * p : 3 * p + 3] = out[p * 4 : p * 4 + 3]
    return height, width, bytes(rgb)
