"""Reader for CTranslate2 model.bin files (format version 6): every variable as a numpy array.

Layout (little-endian): u32 version; string spec name; u32 spec revision; u32 variable count;
per variable: string name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, raw bytes;
then u32 alias count and (alias, target) string pairs. A string is a u16 length that counts a
trailing NUL, then the bytes.
"""
import struct

import numpy as np

# CTranslate2 dtype codes.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class Reader:
    def __init__(self, data):
        self.data = memoryview(data)
        self.at = 0

    def take(self, n):
        b = self.data[self.at:self.at + n]
        if len(b) != n:
            raise ValueError("model.bin is truncated")
        self.at += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def string(self):
        n = self.u16()
        return bytes(self.take(n)).rstrip(b"\0").decode("utf-8")


def load(path):
    """Returns (spec name, revision, {name: array}) with aliases resolved."""
    with open(path, "rb") as f:
        r = Reader(f.read())
    version = r.u32()
    if version != 6:
        raise ValueError(f"unsupported CTranslate2 format version {version}")
    spec = r.string()
    revision = r.u32()
    variables = {}
    for _ in range(r.u32()):
        name = r.string()
        rank = r.u8()
        dims = [r.u32() for _ in range(rank)]
        dtype = r.u8()
        nbytes = r.u32()
        if dtype not in DTYPES:
            raise ValueError(f"{name}: unsupported dtype code {dtype}")
        arr = np.frombuffer(bytes(r.take(nbytes)), dtype=DTYPES[dtype]).reshape(dims)
        variables[name] = arr
    for _ in range(r.u32()):
        alias, target = r.string(), r.string()
        variables[alias] = variables[target]
    return spec, revision, variables
