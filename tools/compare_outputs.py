#!/usr/bin/env python3
"""Compares an output of fae-studio on another platform with the native one (standard library only,
so it runs on a bare machine). Prints one line and exits 0 when within tolerance, 1 when not.

  compare_outputs.py tokens A.safetensors B.safetensors [--rel 1e-4]
      every f32 tensor of B against A: the largest difference over the largest magnitude of A's
      tensor (relative), and the largest absolute difference
  compare_outputs.py image A.png B.png [--grey 1]
      8-bit PNGs of the same size: the largest difference of any channel, in grey levels
"""
import json
import struct
import sys
import zlib


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        count = (end - start) // 4
        out[name] = (info["shape"], struct.unpack(f"<{count}f", body[start:end]))
    return out


def read_png(path):
    """8-bit greyscale, RGB or RGBA PNG, not interlaced: (width, height, channels, bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise SystemExit(f"{path}: only 8-bit non-interlaced grey/RGB/RGBA PNGs are compared")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 255
            elif kind == 2:
                cur[i] = (cur[i] + b) & 255
            elif kind == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 255
        rows.append(bytes(cur))
        prev = cur
    return width, height, channels, b"".join(rows)


def option(name, default):
    return float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("tokens", "image"):
        raise SystemExit(__doc__)
    kind, a_path, b_path = sys.argv[1:4]
    if kind == "tokens":
        limit = option("--rel", 1e-4)
        a, b = read_safetensors(a_path), read_safetensors(b_path)
        if sorted(a) != sorted(b):
            print(f"different tensors: {sorted(a)} vs {sorted(b)}")
            return 1
        worst_rel, worst_abs, identical = 0.0, 0.0, True
        for name, (shape, va) in a.items():
            shape_b, vb = b[name]
            if shape != shape_b:
                print(f"{name}: shape {shape} vs {shape_b}")
                return 1
            scale = max((abs(x) for x in va), default=0.0) or 1.0
            diff = max((abs(x - y) for x, y in zip(va, vb)), default=0.0)
            identical &= va == vb
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / scale)
        ok = worst_rel <= limit
        what = "bit-identical" if identical else f"max rel {worst_rel:.1e} (abs {worst_abs:.1e})"
        print(f"{'ok' if ok else 'DIFFERS'}: {what}")
        return 0 if ok else 1
    limit = option("--grey", 1)
    wa, ha, ca, pa = read_png(a_path)
    wb, hb, cb, pb = read_png(b_path)
    if (wa, ha, ca) != (wb, hb, cb):
        print(f"DIFFERS: {wa}x{ha}x{ca} vs {wb}x{hb}x{cb}")
        return 1
    diff = max((abs(x - y) for x, y in zip(pa, pb)), default=0)
    ok = diff <= limit
    what = "identical" if diff == 0 else f"max {diff} grey level{'s' if diff > 1 else ''}"
    print(f"{'ok' if ok else 'DIFFERS'}: {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
