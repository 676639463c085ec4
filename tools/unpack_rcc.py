#!/usr/bin/env python3
"""Unpack Qt binary resource bundles (``.rcc`` files made by ``rcc -binary``).

Written from the format description (Qt's rcc writer and QResource reader
behaviour); no code was copied from other projects.

Format (all integers big-endian)
--------------------------------
Header::

    magic        4 bytes  b"qres"
    version      u32      1, 2 or 3
    tree_offset  u32      start of the node table
    data_offset  u32      start of the data blobs
    names_offset u32      start of the name table
    flags        u32      only when version >= 3: union of the compression
                          flags used in the file (informational)

Node table: fixed-size records indexed from 0; record 0 is the root
directory.  Each record is::

    name_offset  u32      into the name table (unused for the root)
    flags        u16      0x01 zlib-compressed, 0x02 directory,
                          0x04 zstd-compressed
    directory:   child_count u32, first_child u32 (a node index; the
                 children are the records first_child .. +child_count-1,
                 sorted by name hash)
    file:        territory u16, language u16, data_offset u32
                 (into the data area)
    mtime        u64      only when version >= 2: last modification,
                          milliseconds since the Unix epoch (0 = unknown)

so a record is 14 bytes in version 1 and 22 bytes in versions 2 and 3.

Name table entry::

    length u16            number of UTF-16 code units
    hash   u32            qt_hash of the name (checked, see ``qt_hash``)
    name   length * 2 bytes, UTF-16 big-endian

Data blob::

    size   u32            number of bytes that follow
    bytes  size bytes     the file; if the node has the zlib flag this is
                          Qt's qCompress format (u32 big-endian
                          uncompressed length, then a zlib stream); if it
                          has the zstd flag it is one zstd frame.

zstd entries are decoded with the standard library's ``compression.zstd``
(Python 3.14+), or the third-party ``zstandard`` module when installed.
Without either they are reported and skipped (exit status stays 0 unless
``--strict`` is given).

Usage::

    unpack_rcc.py [-l] [-o OUTDIR] [--per-bundle] [-i GLOB ...] [--strict]
                  FILE.rcc ...

``-l`` lists entries (path, size, compression, locale) instead of writing.
``-o`` writes the files under OUTDIR (default: the current directory),
keeping the resource paths (``:/a/b.png`` -> ``OUTDIR/a/b.png``).
``-i`` keeps only paths whose basename or full path matches one of the
shell-style globs (case-insensitive), e.g. ``-i '*.jpg' -i '*.png'``.

The last line on stdout is a summary in the form::

    SUMMARY files=N written=N skipped_zstd=N errors=N bundles_failed=N

preceded by one ``FAILED<TAB>bundle<TAB>reason`` line per bundle that could
not be parsed.  ``--per-bundle`` writes each bundle below
``OUTDIR/<bundle name without .rcc>/``.

Exit status: 0 success, 1 a bundle could not be parsed (or, with
``--strict``, an entry was skipped), 2 usage error.

It can also be imported: ``parse(data)`` yields ``Entry`` tuples and
``decode(entry, data)`` returns the file's bytes.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import struct
import sys
import zlib
from typing import Iterator, NamedTuple, Optional

FLAG_ZLIB = 0x01
FLAG_DIR = 0x02
FLAG_ZSTD = 0x04

MAGIC = b"qres"


class RccError(Exception):
    """The bundle is malformed or uses an unsupported version."""


class ZstdUnavailable(Exception):
    """An entry is zstd-compressed and no zstd decoder is available."""


class Entry(NamedTuple):
    path: str          # "/"-separated, no leading slash
    flags: int
    territory: int
    language: int
    data_offset: int   # absolute offset of the blob's u32 size field
    mtime_ms: int

    @property
    def compression(self) -> str:
        if self.flags & FLAG_ZSTD:
            return "zstd"
        if self.flags & FLAG_ZLIB:
            return "zlib"
        return "none"


def qt_hash(units: bytes) -> int:
    """Qt's qt_hash over UTF-16 code units (as used in the rcc name table)."""
    h = 0
    for (c,) in struct.iter_unpack(">H", units):
        h = (h << 4) + c
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def _u16(buf: bytes, off: int) -> int:
    if off < 0 or off + 2 > len(buf):
        raise RccError(f"read past end of file at offset {off}")
    return struct.unpack_from(">H", buf, off)[0]


def _u32(buf: bytes, off: int) -> int:
    if off < 0 or off + 4 > len(buf):
        raise RccError(f"read past end of file at offset {off}")
    return struct.unpack_from(">I", buf, off)[0]


def _u64(buf: bytes, off: int) -> int:
    if off < 0 or off + 8 > len(buf):
        raise RccError(f"read past end of file at offset {off}")
    return struct.unpack_from(">Q", buf, off)[0]


class Header(NamedTuple):
    version: int
    tree: int
    data: int
    names: int
    flags: int


def read_header(buf: bytes) -> Header:
    if buf[:4] != MAGIC:
        raise RccError("not an rcc bundle (magic 'qres' missing)")
    version = _u32(buf, 4)
    if version not in (1, 2, 3):
        raise RccError(f"unsupported rcc version {version}")
    tree, data, names = _u32(buf, 8), _u32(buf, 12), _u32(buf, 16)
    flags = _u32(buf, 20) if version >= 3 else 0
    for what, off in (("tree", tree), ("data", data), ("names", names)):
        if off >= len(buf):
            raise RccError(f"{what} offset {off} beyond file size {len(buf)}")
    return Header(version, tree, data, names, flags)


def read_name(buf: bytes, hdr: Header, name_offset: int,
              hash_errors: Optional[list] = None) -> str:
    off = hdr.names + name_offset
    length = _u16(buf, off)
    stored_hash = _u32(buf, off + 2)
    start = off + 6
    end = start + 2 * length
    if end > len(buf):
        raise RccError(f"name at offset {off} runs past end of file")
    units = buf[start:end]
    name = units.decode("utf-16-be", errors="surrogatepass")
    if hash_errors is not None and qt_hash(units) != stored_hash:
        hash_errors.append(name)
    return name


def _safe_component(name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RccError(f"unsafe path component {name!r}")
    return name


def parse(buf: bytes, hash_errors: Optional[list] = None) -> Iterator[Entry]:
    """Yield every file entry of the bundle, depth first.

    Directories are walked from the root node (index 0).  A node index is
    visited at most once, so a corrupt (cyclic) tree cannot loop forever.
    Names whose stored hash disagrees with ``qt_hash`` are appended to
    ``hash_errors`` when a list is given.
    """
    hdr = read_header(buf)
    node_size = 14 if hdr.version == 1 else 22
    n_nodes_max = (len(buf) - hdr.tree) // node_size
    seen = set()

    def node(index: int):
        if index < 0 or index >= n_nodes_max:
            raise RccError(f"node index {index} out of range")
        if index in seen:
            raise RccError(f"node {index} reached twice (corrupt tree)")
        seen.add(index)
        off = hdr.tree + index * node_size
        name_off = _u32(buf, off)
        flags = _u16(buf, off + 4)
        mtime = _u64(buf, off + 14) if hdr.version >= 2 else 0
        return off, name_off, flags, mtime

    stack = [(0, "")]  # (node index, parent path)
    while stack:
        index, parent = stack.pop()
        off, name_off, flags, mtime = node(index)
        if index == 0:
            path = ""
            if not flags & FLAG_DIR:
                raise RccError("root node is not a directory")
        else:
            name = _safe_component(read_name(buf, hdr, name_off, hash_errors))
            path = f"{parent}/{name}" if parent else name
        if flags & FLAG_DIR:
            count = _u32(buf, off + 6)
            first = _u32(buf, off + 10)
            if count > n_nodes_max:
                raise RccError(f"directory {path!r} claims {count} children")
            # push in reverse so that children are yielded in table order
            for child in range(first + count - 1, first - 1, -1):
                stack.append((child, path))
        else:
            territory = _u16(buf, off + 6)
            language = _u16(buf, off + 8)
            data_off = hdr.data + _u32(buf, off + 10)
            yield Entry(path, flags, territory, language, data_off, mtime)


def _zstd_decompress(blob: bytes) -> bytes:
    try:
        from compression import zstd  # Python >= 3.14 standard library
        return zstd.decompress(blob)
    except ImportError:
        pass
    try:
        import zstandard  # optional third-party module
    except ImportError:
        raise ZstdUnavailable(
            "zstd-compressed entry and no zstd decoder "
            "(needs Python 3.14 compression.zstd or the zstandard module)")
    return zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 31)


def raw_blob(entry: Entry, buf: bytes) -> bytes:
    size = _u32(buf, entry.data_offset)
    start = entry.data_offset + 4
    if start + size > len(buf):
        raise RccError(f"data of {entry.path!r} runs past end of file")
    return buf[start:start + size]


def decode(entry: Entry, buf: bytes) -> bytes:
    """Return the uncompressed contents of a file entry."""
    blob = raw_blob(entry, buf)
    if entry.flags & FLAG_ZSTD:
        return _zstd_decompress(blob)
    if entry.flags & FLAG_ZLIB:
        if len(blob) < 4:
            raise RccError(f"compressed entry {entry.path!r} too short")
        expected = struct.unpack_from(">I", blob, 0)[0]
        try:
            out = zlib.decompress(blob[4:])
        except zlib.error as e:
            raise RccError(f"zlib error in {entry.path!r}: {e}") from None
        if len(out) != expected:
            raise RccError(f"{entry.path!r}: inflated to {len(out)} bytes, "
                           f"header says {expected}")
        return out
    return blob


def _matches(path: str, globs: list) -> bool:
    if not globs:
        return True
    low = path.lower()
    base = low.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(base, g) or fnmatch.fnmatchcase(low, g)
               for g in globs)


def _locale_suffix(e: Entry) -> str:
    # QLocale numbering: language 0 = AnyLanguage, 1 = C (rcc's default for
    # files without a lang attribute); territory 0 = AnyTerritory
    if e.language in (0, 1) and e.territory == 0:
        return ""
    return f"~{e.language}_{e.territory}"


def _write(outdir: str, rel: str, data: bytes) -> bool:
    """Write atomically; return False when an identical file already exists."""
    dest = os.path.join(outdir, *rel.split("/"))
    try:
        if os.path.getsize(dest) == len(data):
            with open(dest, "rb") as f:
                if f.read() == data:
                    return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Unpack Qt .rcc binary resource bundles.")
    ap.add_argument("bundles", nargs="+", metavar="FILE.rcc")
    ap.add_argument("-o", "--outdir", default=".",
                    help="write files below this folder (default: .)")
    ap.add_argument("-l", "--list", action="store_true",
                    help="list entries instead of writing them")
    ap.add_argument("-i", "--include", action="append", default=[],
                    metavar="GLOB", help="keep only matching paths "
                    "(basename or full path, case-insensitive; repeatable)")
    ap.add_argument("--per-bundle", action="store_true",
                    help="write each bundle below OUTDIR/<bundle name "
                    "without .rcc>/ instead of OUTDIR/")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when any entry had to be skipped")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no per-entry messages")
    args = ap.parse_args(argv)
    globs = [g.lower() for g in args.include]

    n_files = n_written = n_zstd = n_err = n_failed = 0
    for bundle in args.bundles:
        try:
            with open(bundle, "rb") as f:
                buf = f.read()
            hash_errors: list = []
            entries = list(parse(buf, hash_errors))
        except (OSError, RccError) as e:
            print(f"unpack_rcc: {bundle}: cannot parse: {e}", file=sys.stderr)
            print(f"FAILED\t{bundle}\t{e}")
            n_failed += 1
            continue
        outdir = args.outdir
        if args.per_bundle:
            stem = os.path.basename(bundle)
            if stem.lower().endswith(".rcc"):
                stem = stem[:-4]
            outdir = os.path.join(args.outdir, stem)
        if hash_errors:
            print(f"unpack_rcc: {bundle}: warning: {len(hash_errors)} name "
                  f"hash mismatches (e.g. {hash_errors[0]!r})", file=sys.stderr)
        used = set()
        for e in entries:
            if not _matches(e.path, globs):
                continue
            n_files += 1
            rel = e.path
            suffix = _locale_suffix(e)
            if suffix or rel in used:
                stem, dot, ext = rel.rpartition(".")
                rel = (f"{stem}{suffix or '~dup'}.{ext}" if dot and "/" not in ext
                       else rel + (suffix or "~dup"))
            used.add(rel)
            if args.list:
                size = _u32(buf, e.data_offset)
                print(f"{e.path}\t{size}\t{e.compression}\t"
                      f"{e.language}_{e.territory}")
                continue
            try:
                data = decode(e, buf)
            except ZstdUnavailable as ex:
                n_zstd += 1
                print(f"unpack_rcc: {bundle}: skipped {e.path}: {ex}",
                      file=sys.stderr)
                continue
            except RccError as ex:
                n_err += 1
                print(f"unpack_rcc: {bundle}: {ex}", file=sys.stderr)
                continue
            if _write(outdir, rel, data):
                n_written += 1
                if not args.quiet:
                    print(f"  {rel} ({len(data)} bytes, {e.compression})",
                          file=sys.stderr)
    print(f"SUMMARY files={n_files} written={n_written} skipped_zstd={n_zstd} "
          f"errors={n_err} bundles_failed={n_failed}")
    if n_failed or n_err:
        return 1
    if args.strict and n_zstd:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
