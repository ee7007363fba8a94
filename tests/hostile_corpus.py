"""Hostile and odd files for tests/test_hostile.py, built from bytes (nothing downloaded).

Each builder writes one file into a folder and returns its path. ``INPUTS`` and ``WEIGHTS``
map a case name to a builder; every one of them must be refused with exit 2 (docs/security.md).
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

GiB = 2**30


# -- PNG ------------------------------------------------------------------------------------------
def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, *, color: int = 2, ihdr: bytes | None = None) -> bytes:
    if ihdr is None:
        ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zeros_deflated(mib: int) -> bytes:
    """A zlib stream that inflates to ``mib`` MiB of zeros, about 1 KB per MiB (full-flush blocks)."""
    c = zlib.compressobj(9)
    head = c.compress(b"\0" * 2**20) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(b"\0" * 2**20) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * (mib - 1) + c.flush()


def png_bomb(folder: Path, mib: int = 4096) -> Path:
    """A 224x224 RGB header whose IDAT inflates to ``mib`` MiB (4 GiB: a 4 MB file)."""
    path = folder / "bomb.png"
    path.write_bytes(png(224, 224, zeros_deflated(mib)))
    return path


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return build


_ROW = zlib.compress(b"\0" * (224 * 3 + 1) * 224)
PNG_CASES = {
    "png-huge-dimensions": _write("huge.png", png(100_000, 100_000, zlib.compress(b"\0" * 1000))),
    "png-wide-strip": _write("wide.png", png(2**31 - 1, 1, zlib.compress(b"\0" * 1000))),
    "png-20000-square": _write("big.png", png(20_000, 20_000, zeros_deflated(4))),
    "png-zero-width": _write("zw.png", png(0, 224, _ROW)),
    "png-zero-height": _write("zh.png", png(224, 0, _ROW)),
    "png-15-byte-ihdr": _write(
        "ihdr15.png", png(224, 224, _ROW, ihdr=b"\0\0\0\xe0\0\0\0\xe0\x08\x02\0\0\0\0\0")
    ),
    "png-12-byte-ihdr": _write("ihdr12.png", png(224, 224, _ROW, ihdr=b"\0\0\0\xe0\0\0\0\xe0\x08\x02\0\0")),
    "png-truncated-after-ihdr": _write("cut.png", png(224, 224, _ROW)[:33]),
    "png-signature-only": _write("sig.png", b"\x89PNG\r\n\x1a\n"),
    "png-bad-bit-depth": _write(
        "bd.png", png(224, 224, _ROW, ihdr=struct.pack(">IIBBBBB", 224, 224, 7, 2, 0, 0, 0))
    ),
    "png-bad-color-type": _write(
        "ct.png", png(224, 224, _ROW, ihdr=struct.pack(">IIBBBBB", 224, 224, 8, 5, 0, 0, 0))
    ),
    "png-garbage-idat": _write("gi.png", png(224, 224, b"\xde\xad\xbe\xef" * 64)),
    "png-empty": _write("empty.png", b""),
    "png-text": _write("text.png", b"not a png at all\n" * 10),
    "jpeg-truncated": _write("x.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    "jpeg-huge-sof": _write(
        "sof.jpeg",
        b"\xff\xd8"
        + b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
        + b"\xff\xd9",
    ),
    "webp-garbage": _write("x.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8),
    "bmp-huge-header": _write(
        "x.bmp",
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0),
    ),
    "bmp-negative-size": _write(
        "neg.bmp",
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, -5, 0, 1, 24, 0, 0, 0, 0, 0, 0),
    ),
}


# -- .npy -----------------------------------------------------------------------------------------
def npy_header(descr: str, shape: tuple[int, ...], *, fortran: bool = False, version: int = 1) -> bytes:
    text = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text)) + text.encode("latin1")


def _npy_array(name: str, arr: np.ndarray) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        np.save(path, arr, allow_pickle=True)
        return path

    return build


NPY_CASES = {
    "npy-empty": _write("empty.npy", b""),
    "npy-magic-only": _write("magic.npy", b"\x93NUMPY\x01\x00"),
    "npy-bad-magic": _write("bad.npy", b"\x93NUMPX\x01\x00" + b"\0" * 100),
    "npy-claims-56-GiB": _write("claims.npy", npy_header("<f4", (1, 3, 122_880, 40_960)) + b"\0" * 4096),
    "npy-claims-one-byte-more": _write(
        "short.npy", npy_header("<f4", (1, 3, 8, 8)) + b"\0" * (3 * 64 * 4 - 1)
    ),
    "npy-truncated-header": _write("th.npy", npy_header("<f4", (1, 3, 8, 8))[:30]),
    "npy-header-not-a-dict": _write(
        "nd.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 54) + b"[1, 2, 3]".ljust(53) + b"\n"
    ),
    "npy-header-bad-descr": _write("bdescr.npy", npy_header("<q9", (1, 3, 8, 8)) + b"\0" * 1536),
    "npy-negative-shape": _write("neg.npy", npy_header("<f4", (1, -3, 8, 8)) + b"\0" * 64),
    "npy-version-3": _write("v3.npy", npy_header("<f4", (1, 3, 8, 8), version=3) + b"\0" * 768),
    "npy-version-9": _write("v9.npy", npy_header("<f4", (1, 3, 8, 8), version=9) + b"\0" * 768),
    "npy-longdouble": _npy_array("ld.npy", np.zeros((1, 3, 8, 8), dtype=np.longdouble)),
    "npy-complex64": _npy_array("c64.npy", np.zeros((1, 3, 8, 8), dtype=np.complex64)),
    "npy-complex128": _npy_array("c128.npy", np.zeros((1, 3, 8, 8), dtype=np.complex128)),
    "npy-object": _npy_array("obj.npy", np.array([1, "a", None], dtype=object)),
    "npy-structured": _npy_array("rec.npy", np.zeros((1, 3, 8, 8), dtype=[("a", "<f4"), ("b", "<i4")])),
    "npy-unicode": _npy_array("u.npy", np.array([["abc"] * 8] * 8, dtype="<U3").reshape(1, 1, 8, 8)),
    "npy-bytes": _npy_array("s.npy", np.zeros((1, 3, 8, 8), dtype="S4")),
    "npy-datetime": _npy_array("dt.npy", np.zeros((1, 3, 8, 8), dtype="datetime64[s]")),
    "npy-timedelta": _npy_array("td.npy", np.zeros((1, 3, 8, 8), dtype="timedelta64[s]")),
    "npy-void": _npy_array("v.npy", np.zeros((1, 3, 8, 8), dtype="V4")),
    "npy-2d": _npy_array("2d.npy", np.zeros((8, 8), dtype=np.float32)),
    "npy-5d": _npy_array("5d.npy", np.zeros((1, 1, 3, 8, 8), dtype=np.float32)),
    "npy-scalar": _npy_array("0d.npy", np.float32(1.0).reshape(())),
    "npy-zero-batch": _npy_array("zb.npy", np.zeros((0, 3, 8, 8), dtype=np.float32)),
    "npy-zero-width": _npy_array("zw.npy", np.zeros((1, 3, 8, 0), dtype=np.float32)),
    "npy-pickle-bytes": _write("pk.npy", pickle.dumps({"a": 1})),
}


# -- .pt ------------------------------------------------------------------------------------------
def _torch(name: str, make: Callable[[], object]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        torch.save(make(), path)
        return path

    return build


def expanded() -> torch.Tensor:
    """150 KB on disk, 6 GB as floats: a stride-0 batch of 10000."""
    return torch.zeros(1, 3, 224, 224, dtype=torch.uint8).expand(10_000, 3, 224, 224)


def _zip_with(
    name: str, entries: dict[str, bytes], *, compress: int = zipfile.ZIP_STORED
) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        with zipfile.ZipFile(path, "w", compression=compress) as zf:
            for entry, data in entries.items():
                zf.writestr(entry, data)
        return path

    return build


def _torch_zip_rezipped(name: str) -> Callable[[Path], Path]:
    """A real torch.save file whose entries were deflated: its data would inflate unchecked."""

    def build(folder: Path) -> Path:
        buf = io.BytesIO()
        torch.save(torch.zeros(64, 3, 224, 224), buf)
        path = folder / name
        with (
            zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src,
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst,
        ):
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        return path

    return build


def _declared_huge(name: str) -> Callable[[Path], Path]:
    """A stored zip entry whose local and central headers declare 40 GiB it does not hold."""

    def build(folder: Path) -> Path:
        path = folder / name
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"x": 1}, protocol=2))
            zf.writestr("archive/data/0", b"\0" * 1024)
        raw = bytearray(path.read_bytes())
        small = struct.pack("<I", 1024)
        huge = struct.pack("<I", 0xFFFF0000)  # about 4 GiB in each 32-bit size field
        at = 0
        while (at := raw.find(small + small, at)) >= 0:  # compressed and uncompressed size side by side
            raw[at + 4 : at + 8] = huge
            at += 8
        path.write_bytes(bytes(raw))
        return path

    return build


def _legacy(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        torch.save(torch.zeros(1, 3, 8, 8), path, _use_new_zipfile_serialization=False)
        return path

    return build


def _truncated_torch(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        buf = io.BytesIO()
        torch.save(torch.zeros(1, 3, 32, 32), buf)
        path = folder / name
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return path

    return build


def _sparse() -> torch.Tensor:
    return torch.zeros(1, 3, 8, 8).to_sparse()


PT_CASES = {
    "pt-empty": _write("empty.pt", b""),
    "pt-text": _write("text.pt", b"this is not a checkpoint\n" * 40),
    "pt-fake-zip": _write("fake.pt", b"PK\x03\x04" + b"\0" * 200),
    "pt-truncated": _truncated_torch("cut.pt"),
    "pt-legacy-format": _legacy("legacy.pt"),
    "pt-bare-pickle": _write("pickle.pt", pickle.dumps({"x": [1.0] * 10}, protocol=4)),
    "pt-deflated-entries": _torch_zip_rezipped("deflated.pt"),
    "pt-deflated-bomb": _zip_with(
        "zbomb.pt",
        {"archive/data.pkl": b"\0" * (64 * 2**20), "archive/data/0": b"\0" * 2**20},
        compress=zipfile.ZIP_DEFLATED,
    ),
    "pt-declared-huge-entry": _declared_huge("declared.pt"),
    "pt-zip-without-pickle": _zip_with("nopkl.pt", {"archive/data/0": b"\0" * 64}),
    "pt-quantized": _torch(
        "q.pt", lambda: torch.quantize_per_tensor(torch.zeros(1, 3, 8, 8), 0.1, 0, torch.quint8)
    ),
    "pt-meta": _torch("meta.pt", lambda: torch.empty(1, 3, 224, 224, device="meta")),
    "pt-sparse-coo": _torch("coo.pt", _sparse),
    "pt-sparse-csr": _torch("csr.pt", lambda: torch.zeros(3, 8).to_sparse_csr()),
    "pt-complex": _torch("cplx.pt", lambda: torch.zeros(1, 3, 8, 8, dtype=torch.complex64)),
    "pt-float8": _torch("f8.pt", lambda: torch.zeros(1, 3, 8, 8).to(torch.float8_e4m3fn)),
    "pt-a-string": _torch("str.pt", lambda: "hello"),
    "pt-a-list": _torch("list.pt", lambda: [torch.zeros(1, 3, 8, 8)]),
    "pt-two-tensors": _torch("two.pt", lambda: {"a": torch.zeros(1, 3, 8, 8), "b": torch.zeros(1)}),
    "pt-2d": _torch("2d.pt", lambda: torch.zeros(8, 8)),
    "pt-scalar": _torch("0d.pt", lambda: torch.tensor(1.0)),
    "pt-zero-batch": _torch("zb.pt", lambda: torch.zeros(0, 3, 224, 224)),
}


# -- special files --------------------------------------------------------------------------------
def _symlink(name: str, target: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.symlink_to(target)
        return path

    return build


def _fifo(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        os.mkfifo(path)
        return path

    return build


def _socket(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(str(path))
        finally:
            s.close()
        return path

    return build


def _folder(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.mkdir()
        return path

    return build


def _link_to_fifo(name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        os.mkfifo(folder / "real-fifo")
        path = folder / name
        path.symlink_to(folder / "real-fifo")
        return path

    return build


def special_cases(suffix: str) -> dict[str, Callable[[Path], Path]]:
    return {
        f"symlink-to-dev-zero{suffix}": _symlink(f"zero{suffix}", "/dev/zero"),
        f"symlink-to-dev-urandom{suffix}": _symlink(f"urandom{suffix}", "/dev/urandom"),
        f"symlink-to-dev-null{suffix}": _symlink(f"null{suffix}", "/dev/null"),
        f"fifo{suffix}": _fifo(f"fifo{suffix}"),
        f"symlink-to-fifo{suffix}": _link_to_fifo(f"lfifo{suffix}"),
        f"dangling-symlink{suffix}": _symlink(f"dangling{suffix}", "/nonexistent/nowhere"),
        f"symlink-loop{suffix}": _symlink(f"loop{suffix}", f"loop{suffix}"),
        f"directory{suffix}": _folder(f"dir{suffix}"),
        f"socket{suffix}": _socket(f"sock{suffix}"),
        f"missing{suffix}": lambda folder: folder / f"missing{suffix}",
    }


def device_node(folder: Path, suffix: str) -> Path:
    """A character device with /dev/zero's numbers (needs root; the caller skips otherwise)."""
    import stat

    path = folder / f"zero-device{suffix}"
    st = os.stat("/dev/zero")
    os.mknod(path, 0o600 | stat.S_IFCHR, st.st_rdev)
    return path


INPUTS: dict[str, Callable[[Path], Path]] = {**PNG_CASES, **NPY_CASES, **PT_CASES}
for _suffix in (".pt", ".npy", ".png"):
    INPUTS.update(special_cases(_suffix))
INPUTS["unknown-suffix"] = _write("x.tiff", b"II*\x00")
INPUTS["no-suffix"] = _write("noext", b"\0" * 64)

WEIGHTS: dict[str, Callable[[Path], Path]] = dict(PT_CASES)
WEIGHTS.update(special_cases(".pt"))
WEIGHTS["expanded-weight"] = _torch("expw.pt", lambda: {"fc_layer.weight": torch.zeros(1, 1).expand(2, 128)})
WEIGHTS["quantized-weight"] = _torch(
    "qw.pt", lambda: {"fc_layer.weight": torch.quantize_per_tensor(torch.zeros(2, 128), 0.1, 0, torch.qint8)}
)
WEIGHTS["sparse-weight"] = _torch("sw.pt", lambda: {"fc_layer.weight": torch.zeros(2, 128).to_sparse()})
WEIGHTS["meta-weight"] = _torch("mw.pt", lambda: {"fc_layer.weight": torch.empty(2, 128, device="meta")})
