"""A stdlib-only PNG encoder/decoder (zlib + struct), enough for 8-bit images.

lenet-mnist classifies PNG files the way seed 000 did, without PIL in the
containers.  Writes 8-bit greyscale or RGB; reads 8-bit greyscale, grey+alpha,
RGB and RGBA, non-interlaced, with all five PNG row filters.
"""

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode(image):
    """PNG bytes of a uint8 array (H, W) greyscale or (H, W, 3) RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError("PNG encoder takes uint8 pixels, got %s" % image.dtype)
    if image.ndim == 2:
        colour = 0
    elif image.ndim == 3 and image.shape[2] == 3:
        colour = 2
    else:
        raise ValueError("PNG encoder takes (H, W) or (H, W, 3), got %r" % (image.shape,))
    height, width = image.shape[:2]
    rows = image.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[r].tobytes() for r in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode(data):
    """A uint8 array (H, W) or (H, W, channels) from PNG bytes."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG file")
    pos, header, idat = 8, None, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError("PNG chunk %r fails its CRC" % kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError("unsupported PNG: depth %d colour %d interlace %d"
                         % (depth, colour, interlace))
    channels = _CHANNELS[colour]
    stride = width * channels
    raw = zlib.decompress(b"".join(idat))
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for r in range(height):
        start = r * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride if kind else 0):  # filter 0: bytes are the pixels
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                upleft = prev[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, up, upleft)) & 0xFF
            else:
                raise ValueError("bad PNG filter type %d" % kind)
        out[r * stride:(r + 1) * stride] = line
        prev = line
    array = np.frombuffer(bytes(out), dtype=np.uint8).reshape(height, width, channels)
    return array[:, :, 0] if channels == 1 else array


def write(path, image):
    with open(path, "wb") as f:
        f.write(encode(image))


def read(path):
    with open(path, "rb") as f:
        return decode(f.read())
