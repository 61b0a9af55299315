"""Keeps one GPU architecture's machine code in a CUDA library (python -m ovseg_tools.cuda_fatbin).

ONNX Runtime's CUDA provider (libonnxruntime_providers_cuda.so, about 280 MB) carries its kernels
for every supported architecture (sm_75 to sm_120) in the ELF section .nv_fatbin. To send it to a
GPU machine that takes only tens of MB, this zeroes the payload of every fatbin entry that is not
the given architecture's machine code (headers stay, so the CUDA driver still finds the kept
entry; the file keeps its size and layout) and the zeros compress away. A fatbin with no entry for
the architecture is zeroed whole: its kernels could not run on that GPU anyway (there is no PTX to
compile from). The result runs only on that architecture. Layout of a fatbin (as CUDA writes it):
a 16-byte header (magic 0xBA55ED50, version, header size, payload size), then entries, each a
header (kind 1 = PTX, 2 = ELF at offset 0; header size at 4; payload size at 8; architecture at 28)
followed by its payload.
"""

import argparse
import json
import struct
from pathlib import Path

from .cli import run

FATBIN_MAGIC = 0xBA55ED50
KIND_ELF = 2


def _section(data: bytes, wanted: str):
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strings = headers[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", strings + name)
        if data[strings + name : end].decode() == wanted:
            return offset, size
    raise ValueError(f"no {wanted} section")


def keep_architecture(src: Path, dst: Path, sm: int) -> dict:
    data = bytearray(src.read_bytes())
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{src} is not an ELF file")
    offset, size = _section(data, ".nv_fatbin")
    pos, end = offset, offset + size
    kept = zeroed = fatbins = 0
    while pos < end:
        magic, _version, header, payload = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fatbins are 8-byte aligned
            continue
        fatbins += 1
        entries = []
        entry, stop = pos + header, pos + header + payload
        while entry < stop:
            kind, _v, entry_header, padded = struct.unpack_from("<HHIQ", data, entry)
            (arch,) = struct.unpack_from("<I", data, entry + 28)
            entries.append((kind == KIND_ELF and arch == sm, entry + entry_header, padded))
            entry += entry_header + padded
        for keep, start, length in entries:
            if keep:
                kept += length
            else:
                data[start : start + length] = bytes(length)
                zeroed += length
        pos = stop
    if kept == 0:
        raise ValueError(f"{src} has no machine code for sm_{sm}")
    dst.write_bytes(data)
    return {"fatbins": fatbins, "keptBytes": kept, "zeroedBytes": zeroed}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ovseg_tools.cuda_fatbin", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--sm", type=int, required=True, help="architecture to keep, e.g. 90 for H100/H200")
    args = parser.parse_args(argv)
    print(json.dumps({"out": str(args.dst), "sm": args.sm, **keep_architecture(args.src, args.dst, args.sm)}))


if __name__ == "__main__":
    run(main)
