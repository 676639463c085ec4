#!/usr/bin/env python3
"""Pick the openly licensed photos out of unpacked packages (see fetch_photos.sh).

    collect_photos.py CACHE OUT_DIR

CACHE is the folder fetch_photos.sh fills: ``x/<package>/`` holds each
extracted .deb (``dpkg-deb -x``), ``x/skimage/`` the unzipped wheel,
``rcc/<bundle>/`` the unpacked GCompris resource bundles and
``versions.tsv`` the package versions.

Writes OUT_DIR/<source>/<name>.<ext> (one folder per source, used as class
labels), OUT_DIR/LICENSES.tsv (one row per picture kept, with its category:
photo, painting-illustration or texture), OUT_DIR/EXCLUDED.tsv (pictures left
out because their licence is unknown or not open) and OUT_DIR/SKIPPED.tsv
(files that are not wanted: not a picture, too small, greyscale, near-blank,
mostly transparent, a material map or atlas, a duplicate or other rendition,
or one of the held-out images of assets/heldout.tsv).  Files already in place
with the same content are not rewritten; files in the source folders that are
no longer selected are removed.  The first sources (photos) need only the
standard library (sizes from the file headers); photo_sources.py adds
wallpapers, painted game art and textures, whose pixels are checked with
Pillow and numpy (results cached in CACHE/analysis.json).
"""

from __future__ import annotations

import ast
import functools
import glob
import hashlib
import json
import os
import re
import struct
import sys
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import photo_sources  # noqa: E402  (imports this module back: keep it after the definitions it uses)

MIN_SIDE = 128
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")

# ---------------------------------------------------------------- selection
# Which files count as photos.  Decided by folder where possible, by name
# where a folder mixes photos with drawings (checked by eye for these
# package versions; unknown new files in an allowed folder are kept).

SKIMAGE_NOT_PHOTOS = {
    "chessboard_GRAY": "synthetic test pattern",
    "chessboard_RGB": "synthetic test pattern",
    "color": "synthetic colour wheel",
    "horse": "clip-art silhouette",
    "logo": "logo (drawing)",
    "phantom": "synthetic phantom",
    "clock_motion": "synthetic motion-blur test image",
    "motorcycle_right": "stereo twin of motorcycle_left",
}

# relative to gcompris/src/activities/ inside the bundles; '*' = one level
GCOMPRIS_PHOTO_DIRS = [
    "erase/resource",
    "explore_farm_animals/resource/animals",
    "explore_world_animals/resource/animals",
    "explore_monuments/resource/*",
    "explore_world_music/resource/music",
    "clickgame/resource",               # sea backgrounds; fish sprites < 128 px
    "categorization/resource/images/*",
]
GCOMPRIS_NOT_PHOTO_REASON = (
    "not a photo folder (clip art, paintings, puzzle pieces or UI graphics)")

LOMIRI_NOT_PHOTOS = {
    "umang_by_Abhishek_Mudgal": "abstract render",
}

# mate-backgrounds: only nature/ holds photos (abstract/, desktop/ are art)
MATE_PHOTO_DIRS = ["nature"]

# plasma-workspace-wallpapers: the wallpapers that are photographs
PLASMA_PHOTOS = {
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
    "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
}

# tuxpaint-data: templates/ are photos; brushes, stamps, starters are art
TUXPAINT_PHOTO_DIRS = ["templates"]


# ------------------------------------------------------------ image headers

class ImageInfo(NamedTuple):
    fmt: str         # "jpg", "png" or "webp"
    width: int
    height: int
    grey: bool       # stored with a single colour channel


def image_info(path: str) -> Optional[ImageInfo]:
    """Read format, size and channel count from the header, or None."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            w, h, _depth, ctype = struct.unpack(">IIBB", head[16:26])
            return ImageInfo("png", w, h, ctype in (0, 4))
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            chunk = head[12:16]
            if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack("<HH", head[26:30])
                return ImageInfo("webp", w & 0x3FFF, h & 0x3FFF, False)
            if chunk == b"VP8L" and head[20] == 0x2F:
                bits = int.from_bytes(head[21:25], "little")
                return ImageInfo("webp", (bits & 0x3FFF) + 1,
                                 ((bits >> 14) & 0x3FFF) + 1, False)
            if chunk == b"VP8X":
                w = int.from_bytes(head[24:27], "little") + 1
                h = int.from_bytes(head[27:30], "little") + 1
                return ImageInfo("webp", w, h, False)
            return None
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            while True:
                b = f.read(1)
                while b and b != b"\xff":
                    b = f.read(1)
                while b == b"\xff":
                    b = f.read(1)
                if not b:
                    return None
                marker = b[0]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    continue
                seg = f.read(2)
                if len(seg) < 2:
                    return None
                length = struct.unpack(">H", seg)[0]
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                              0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    data = f.read(6)
                    if len(data) < 6:
                        return None
                    _p, h, w, nc = struct.unpack(">BHHB", data)
                    return ImageInfo("jpg", w, h, nc == 1)
                if marker == 0xD9:
                    return None
                f.seek(length - 2, os.SEEK_CUR)
    return None


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ licences

ALLOWED = [
    r"cc0(-1\.0)?",
    r"public-domain",
    r"cc-by(-sa)?(-\d(\.\d)?)?",
    r"l?gpl(-\d(\.\d)?)?\+?(-or-later|-only)?",
    r"gfdl(-niv)?(-\d(\.\d)?)?\+?",
    r"mit|expat",
    r"bsd(-\d-clause)?",
    r"apache(-license)?(-\d(\.\d)?)?",
    r"zlib",
    r"fal(-1\.[0-3])?",               # Free Art License (copyleft, like CC-BY-SA)
]
_ALLOWED_RE = re.compile("^(" + "|".join(ALLOWED) + ")$")


def normalise_licence(text: str) -> str:
    """Spell licence names one way: 'CC-BY-SA 4.0' -> 'CC-BY-SA-4.0',
    'Public Domain' -> 'public-domain', 'GPLv3 or later' -> 'GPL-3+'."""
    s = " ".join(text.split())
    s = re.sub(r"(?i)\bpublic[ -]domain\b", "public-domain", s)
    s = re.sub(r"(?i)\b(L?GPL)v?\s?(\d(?:\.\d)?)(\+?)\s+or\s+later\b",
               lambda m: f"{m.group(1).upper()}-{m.group(2)}+", s)
    s = re.sub(r"(?i)\b(L?GPL)v(\d(?:\.\d)?)(\+?)",
               lambda m: f"{m.group(1).upper()}-{m.group(2)}{m.group(3)}", s)
    s = re.sub(r"(?i)\b(CC-BY(?:-SA|-NC|-ND|-NC-SA|-NC-ND)?)[ ](\d\.\d)\b",
               lambda m: f"{m.group(1).upper()}-{m.group(2)}", s)
    s = re.sub(r"(?i)^apache license (\d\.\d)$", r"Apache-\1", s)
    return s


def licence_is_open(lic: str) -> bool:
    """True when every 'and' part has at least one allowed 'or' choice."""
    s = normalise_licence(lic).lower()
    s = re.sub(r"\s+with\s+[\w.-]+\s+exception", "", s)
    if not s:
        return False
    for part in re.split(r"\s+and\s+|\s*&\s*", s):
        choices = re.split(r"\s+or\s+|\s*\|\s*", part.strip("() "))
        if not any(_ALLOWED_RE.match(c.strip("() ").replace(" ", "-"))
                   for c in choices):
            return False
    return True


class Stanza(NamedTuple):
    globs: List[str]
    licence: str
    copyright: str
    comment: str


def _fields(paragraph: List[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    key = None
    for line in paragraph:
        m = re.match(r"^([A-Za-z][A-Za-z-]*):\s?(.*)$", line)
        if m and not line[:1].isspace():
            key = m.group(1).lower()
            out[key] = m.group(2).strip()
        elif key is not None:
            cont = line.strip()
            out[key] = (out[key] + "\n" + ("" if cont == "." else cont)).strip("\n")
    return out


def parse_dep5(path: str) -> List[Stanza]:
    """Files paragraphs of a machine-readable debian/copyright, in order."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    stanzas = []
    for para in re.split(r"\n\s*\n", text):
        fields = _fields(para.splitlines())
        if "files" in fields and "license" in fields:
            stanzas.append(Stanza(
                fields["files"].split(),
                fields["license"].splitlines()[0].strip(),
                "; ".join(x.strip() for x in fields.get("copyright", "").splitlines() if x.strip()),
                " ".join(fields.get("comment", "").split()),
            ))
    return stanzas


RASTER_EXT = re.compile(r"\.(jpe?g|png|webp|gif)$", re.I)


@functools.lru_cache(maxsize=None)
def _glob_re(g: str, loose_ext: bool) -> re.Pattern:
    # DEP-5 globs: '*' any run of characters (including '/'), '?' one
    parts = []
    if loose_ext:
        g = RASTER_EXT.sub(".\0", g)
    for ch in g:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        elif ch == "\0":
            parts.append(r"(jpe?g|png|webp|gif)")
        else:
            parts.append(re.escape(ch))
    return re.compile("^" + "".join(parts) + "$", re.I if loose_ext else 0)


def match_dep5(stanzas: List[Stanza], src_path: str) -> Tuple[Optional[Stanza], str]:
    """Last matching stanza (DEP-5 rule).  Exact glob match first; if only
    the catch-all '*' matched, retry ignoring the raster extension (GCompris
    converted its .jpg/.png to .webp after the copyright file was written).
    Returns (stanza, matched glob)."""
    best: Tuple[Optional[Stanza], str] = (None, "")
    for st in stanzas:
        for g in st.globs:
            if _glob_re(g, False).match(src_path):
                best = (st, g)
    if best[0] is None or best[1] == "*":
        for st in stanzas:
            for g in st.globs:
                if g != "*" and _glob_re(g, True).match(src_path):
                    best = (st, g + " (extension ignored)")
    return best


def parse_gcompris_readme(path: str) -> Dict[str, Dict[str, str]]:
    """GCompris resource READMEs: blocks of 'Copyright:', 'License:',
    'Source:' and 'Files:' (names on the same line or the following lines,
    relative to the README's folder).  Returns {relative name: fields}."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    out: Dict[str, Dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: Dict[str, str] = {}
        files: List[str] = []
        key = None
        for line in block.splitlines():
            m = re.match(r"^\s*(Copyright|License|Licence|Source|Files|Comments?|Author)\s*:\s*(.*)$",
                         line, re.I)
            if m:
                key = m.group(1).lower().replace("licence", "license")
                val = m.group(2).strip()
                if key == "files":
                    files += val.split()
                else:
                    fields[key] = val
            elif key == "files" and line.strip():
                files += line.split()
            elif key and line.strip():
                fields[key] = (fields.get(key, "") + " " + line.strip()).strip()
        for name in files:
            out[name] = fields
    return out


# ------------------------------------------------------------------ sources

class Candidate(NamedTuple):
    source: str        # output sub-folder
    package: str
    version: str
    file: str          # where it lies in CACHE
    orig: str          # path inside the package
    name: str          # output name without extension
    licence: Optional[str]
    copyright: str
    evidence: str
    skip: str          # non-empty: not a wanted photo, with the reason
    category: str = "photo"      # photo, painting-illustration or texture
    pixel_checks: bool = False   # decode and check the pixels (photo_sources.analyse)


def read_versions(cache: str) -> Dict[str, str]:
    versions = {}
    with open(os.path.join(cache, "versions.tsv"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                pkg, ver = line.rstrip("\n").split("\t")[:2]
                versions[pkg] = ver
    return versions


def _images_under(root: str, exts=IMAGE_EXTS) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            path = os.path.join(dirpath, fn)
            # symlinks are aliases (plasma's smaller "renditions"), or point
            # outside the package
            if fn.lower().endswith(exts) and not os.path.islink(path):
                yield path


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def skimage_candidates(cache: str, ver: str) -> Iterator[Candidate]:
    data = os.path.join(cache, "x", "skimage", "skimage", "data")
    fetchers = os.path.join(data, "_fetchers.py")
    docs: Dict[str, str] = {}
    if os.path.exists(fetchers):
        # map "data/<file>" mentioned in a function body to its docstring
        tree = ast.parse(open(fetchers, encoding="utf-8").read())
        for fn in tree.body:
            if isinstance(fn, ast.FunctionDef):
                doc = ast.get_docstring(fn) or ""
                for node in ast.walk(fn):
                    if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                            and node.value.startswith("data/")):
                        docs.setdefault(node.value[5:], doc)
    for path in sorted(glob.glob(os.path.join(data, "*"))):
        base = os.path.basename(path)
        if not base.lower().endswith(IMAGE_EXTS):
            continue
        stem = _stem(path)
        doc = " ".join(docs.get(base, "").split())
        lic, author = None, ""
        if re.search(r"\bCC0\b", doc):
            lic = "CC0-1.0"
        elif re.search(r"public domain", doc, re.I):
            lic = "public-domain"
        m = (re.search(r"CC0 by the photographer \(([^)]*)\)", doc)
             or re.search(r"CC0 given by owner \(([^)]*)\)", doc))
        if m:
            author = m.group(1)
        elif re.search(r"captured by (NASA|SpaceX)", doc):
            author = re.search(r"captured by (NASA|SpaceX)", doc).group(1)
        if lic:
            plain = re.sub(r"`([^`<]*?)\s*<[^>]*>`_*", r"\1", doc)  # drop RST links
            sentence = next((t for t in re.split(r"(?<=\.)\s+", plain)
                             if re.search(r"CC0|public domain", t, re.I)), "")
            evidence = "skimage/data/_fetchers.py docstring: " + sentence.strip()
        else:
            evidence = ("skimage/data/_fetchers.py docstring states no licence"
                        + (": " + re.search(r"No known copyright restrictions\.?", doc).group(0)
                           if "No known copyright restrictions" in doc else ""))
        yield Candidate("skimage", "scikit-image", ver, path,
                        "skimage/data/" + base, stem, lic, author, evidence,
                        SKIMAGE_NOT_PHOTOS.get(stem, ""))


def _dir_allowed(rel_dir: str, patterns: List[str]) -> bool:
    for p in patterns:
        if re.match("^" + re.escape(p).replace(r"\*", "[^/]+") + "$", rel_dir):
            return True
    return False


def gcompris_candidates(cache: str, ver: str) -> Iterator[Candidate]:
    pkg = "gcompris-qt-data"
    copyright_file = os.path.join(cache, "x", pkg, "usr/share/doc", pkg, "copyright")
    stanzas = parse_dep5(copyright_file)
    readmes: Dict[str, Dict[str, Dict[str, str]]] = {}
    for bundle_dir in sorted(glob.glob(os.path.join(cache, "rcc", "*"))):
        bundle = os.path.basename(bundle_dir)
        for path in _images_under(bundle_dir):
            rel = os.path.relpath(path, bundle_dir).replace(os.sep, "/")
            orig = f"usr/share/gcompris-qt/rcc/{bundle}.rcc:/{rel}"
            src_path = rel[len("gcompris/"):] if rel.startswith("gcompris/") else rel
            act_rel = src_path[len("src/activities/"):] if src_path.startswith("src/activities/") else src_path
            parts = [p for p in act_rel.split("/")[:-1]
                     if p not in ("resource", "images", "image")]
            name = "-".join(parts + [_stem(path)])
            skip = "" if _dir_allowed(os.path.dirname(act_rel), GCOMPRIS_PHOTO_DIRS) \
                else GCOMPRIS_NOT_PHOTO_REASON
            lic, copy, evidence = None, "", ""
            if not skip:
                # 1. the upstream README shipped next to the file (names match
                #    the shipped .webp files)
                d = os.path.dirname(path)
                while len(d) >= len(bundle_dir) and lic is None:
                    readme = os.path.join(d, "README")
                    if os.path.isfile(readme):
                        if readme not in readmes:
                            readmes[readme] = parse_gcompris_readme(readme)
                        key = os.path.relpath(path, d).replace(os.sep, "/")
                        fields = readmes[readme].get(key)
                        if fields and fields.get("license"):
                            lic = normalise_licence(fields["license"])
                            copy = fields.get("copyright", "")
                            rrel = os.path.relpath(readme, bundle_dir).replace(os.sep, "/")
                            evidence = f"upstream {rrel} (in {bundle}.rcc)"
                            if fields.get("source"):
                                evidence += "; source " + fields["source"]
                    d = os.path.dirname(d)
                # 2. the per-file stanzas of debian/copyright
                st, g = match_dep5(stanzas, src_path)
                if st is not None and g != "*":
                    dep = f"debian/copyright Files: {g} -> {st.licence}"
                    if lic is None:
                        lic, copy = normalise_licence(st.licence), st.copyright
                        evidence = dep + (f"; {st.comment}" if st.comment else "")
                    elif normalise_licence(st.licence).lower() != lic.lower():
                        evidence += f"; differs from {dep} (stanza written for an older file of that name)"
                elif lic is None:
                    evidence = ("no upstream README entry and only the catch-all "
                                "'Files: *' stanza of debian/copyright matches")
            yield Candidate("gcompris", pkg, ver, path, orig, name, lic, copy,
                            evidence, skip)


def deb_candidates(cache: str, source: str, pkg: str, ver: str, root: str,
                   src_prefix: Tuple[str, str], skip_fn, art=None) -> Iterator[Candidate]:
    """Photos of a wallpaper-style package whose debian/copyright stanzas
    name files by their upstream path (installed prefix -> source prefix)."""
    base = os.path.join(cache, "x", pkg)
    stanzas = parse_dep5(os.path.join(base, "usr/share/doc", pkg, "copyright"))
    for path in _images_under(os.path.join(base, root)):
        inst = os.path.relpath(path, base).replace(os.sep, "/")
        src_path = src_prefix[1] + inst[len(src_prefix[0]):] \
            if inst.startswith(src_prefix[0]) else inst
        st, g = match_dep5(stanzas, src_path)
        if st is None:
            lic, copy, evidence = None, "", "no debian/copyright stanza matches"
        else:
            lic, copy = normalise_licence(st.licence), st.copyright
            evidence = f"debian/copyright Files: {g}"
        skip = skip_fn(inst)
        if skip and art is not None and art(inst):
            # artwork of a wallpaper package: its own class folder
            yield Candidate(source + "-art", pkg, ver, path, inst, _stem(path), lic, copy,
                            evidence, "", "painting-illustration", True)
        else:
            yield Candidate(source, pkg, ver, path, inst, _stem(path), lic, copy,
                            evidence, skip)


def plasma_candidates(cache: str, ver: str) -> Iterator[Candidate]:
    pkg = "plasma-workspace-wallpapers"
    base = os.path.join(cache, "x", pkg)
    stanzas = parse_dep5(os.path.join(base, "usr/share/doc", pkg, "copyright"))
    root = os.path.join(base, "usr/share/wallpapers")
    for wp in sorted(os.listdir(root)):
        images = [p for p in _images_under(os.path.join(root, wp, "contents"))]
        if not images:
            continue
        meta_lic, meta_author = None, ""
        mj = os.path.join(root, wp, "metadata.json")
        md = os.path.join(root, wp, "metadata.desktop")
        if os.path.isfile(mj):
            kp = json.load(open(mj, encoding="utf-8")).get("KPlugin", {})
            meta_lic = kp.get("License")
            meta_author = ", ".join(a.get("Name", "") for a in kp.get("Authors", []))
        elif os.path.isfile(md):
            for line in open(md, encoding="utf-8"):
                if line.startswith("X-KDE-PluginInfo-License="):
                    meta_lic = line.split("=", 1)[1].strip()
                if line.startswith("X-KDE-PluginInfo-Author="):
                    meta_author = line.split("=", 1)[1].strip()

        def area(p):
            info = image_info(p)
            return info.width * info.height if info else 0
        # one photo per wallpaper: the largest rendition of contents/images/
        main = [p for p in images if "/contents/images/" in p]
        best = max(main or images, key=area)
        for p in images:
            inst = os.path.relpath(p, base).replace(os.sep, "/")
            st, g = match_dep5(stanzas, inst[len("usr/share/wallpapers/"):])
            dep = f"debian/copyright Files: {g} -> {st.licence}" if st else "no debian/copyright stanza"
            if meta_lic:
                lic, copy = normalise_licence(meta_lic), meta_author
                evidence = f"usr/share/wallpapers/{wp}/{os.path.basename(mj if os.path.isfile(mj) else md)}; {dep}"
            elif st:
                lic, copy, evidence = normalise_licence(st.licence), st.copyright, dep
            else:
                lic, copy, evidence = None, "", dep
            skip = "other rendition of wallpaper " + wp if p != best else ""
            if wp in PLASMA_PHOTOS:
                yield Candidate("plasma", pkg, ver, p, inst, wp, lic, copy, evidence, skip)
            else:
                # renders and illustrations: their own class folder
                yield Candidate("plasma-art", pkg, ver, p, inst, wp, lic, copy, evidence, skip,
                                "painting-illustration", True)


def all_candidates(cache: str) -> Iterator[Candidate]:
    v = read_versions(cache)
    yield from skimage_candidates(cache, v["scikit-image"])
    yield from gcompris_candidates(cache, v["gcompris-qt-data"])
    yield from deb_candidates(
        cache, "lomiri", "lomiri-wallpapers-16.04", v["lomiri-wallpapers-16.04"],
        "usr/share/backgrounds", ("usr/share/backgrounds/", "16.04/"),
        lambda inst: LOMIRI_NOT_PHOTOS.get(_stem(inst), ""), art=lambda inst: True)
    yield from deb_candidates(
        cache, "mate", "mate-backgrounds", v["mate-backgrounds"],
        "usr/share/backgrounds/mate", ("usr/share/backgrounds/mate/", ""),
        lambda inst: "" if inst.split("/")[-2] in MATE_PHOTO_DIRS
        else "not a photo (abstract/desktop artwork folder)", art=lambda inst: True)
    yield from plasma_candidates(cache, v["plasma-workspace-wallpapers"])
    yield from deb_candidates(
        cache, "tuxpaint", "tuxpaint-data", v["tuxpaint-data"],
        "usr/share/tuxpaint", ("usr/share/tuxpaint/", ""),
        lambda inst: "" if inst.split("/")[-2] in TUXPAINT_PHOTO_DIRS
        else "not a photo (brushes, stamps, starters: drawings)",
        art=lambda inst: "/starters/" in inst)
    import photo_sources  # the further sources (imports this module)
    yield from photo_sources.candidates(cache, v)


# -------------------------------------------------------------------- output

def _tsv(fields) -> str:
    return "\t".join(" ".join(str(x).split()) for x in fields) + "\n"


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "photo"
    return s[:120]


def _copy_if_changed(src: str, dest: str, digest: str) -> bool:
    if os.path.isfile(dest) and os.path.getsize(dest) == os.path.getsize(src) \
            and sha256(dest) == digest:
        return False
    tmp = dest + ".part"
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        for block in iter(lambda: fi.read(1 << 20), b""):
            fo.write(block)
    os.replace(tmp, dest)
    return True


def main(argv: List[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    cache, out = argv[1], argv[2]
    import photo_sources as ps
    analysis = ps.AnalysisCache(cache)
    try:
        return _collect(cache, out, analysis)
    finally:
        analysis.save()


def _collect(cache: str, out: str, analysis) -> int:
    import photo_sources as ps
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    heldout = ps.heldout_hashes(repo)
    # other renditions of the held-out images (same difference hash), where the cache holds
    # their package
    heldout_look: Dict[str, str] = {}
    for row in ps.heldout_rows(repo):
        f = os.path.join(cache, "x", row["package"], row["original_path"])
        if os.path.isfile(f):
            px = analysis.get(f)
            if px.dhash:
                heldout_look[px.dhash] = row["path"]
    kept, excluded, skipped = [], [], []
    seen: Dict[str, str] = {}           # sha256 -> relative output path
    renditions: Dict[str, int] = {}     # difference hash -> index into kept
    names: Dict[str, set] = {}
    n_checked = 0
    for c in all_candidates(cache):
        if c.skip:
            skipped.append((c.package, c.orig, c.skip))
            continue
        digest = sha256(c.file)
        if digest in heldout:
            skipped.append((c.package, c.orig, "held-out (" + heldout[digest] + ")"))
            continue
        pixels = None
        if c.pixel_checks:
            pixels = analysis.get(c.file)
            n_checked += 1
            if n_checked % 1000 == 0:
                print(f"  checked the pixels of {n_checked} files", file=sys.stderr)
            if pixels.skip:
                skipped.append((c.package, c.orig, pixels.skip))
                continue
            if ps.ATLAS_PRONE.search(c.orig):
                flat, _n = analysis.shape(c.file)
                if flat > ps.ATLAS_FLAT:
                    skipped.append((c.package, c.orig, f"texture atlas ({100 * flat:.0f} % one "
                                    "flat colour between the parts)"))
                    continue
            if c.source == "tuxpaint-stamps" and c.category == "photo":
                _f, colours = analysis.shape(c.file)
                if colours < ps.DRAWING_COLOURS:
                    c = c._replace(category="painting-illustration")
            convert = pixels.flatten or not c.file.lower().endswith(IMAGE_EXTS)
            info = ImageInfo("png" if convert else (image_info(c.file) or ImageInfo("png", 0, 0, False)).fmt,
                             pixels.width, pixels.height, False)
        else:
            convert = False
            info = image_info(c.file)
            if info is None:
                skipped.append((c.package, c.orig, "not a readable jpg/png/webp"))
                continue
            if min(info.width, info.height) < MIN_SIDE:
                skipped.append((c.package, c.orig,
                                f"too small ({info.width}x{info.height} < {MIN_SIDE} px)"))
                continue
            if info.grey:
                skipped.append((c.package, c.orig, "greyscale (single channel)"))
                continue
        if not c.licence or not licence_is_open(c.licence):
            why = ("licence not determined" if not c.licence
                   else f"licence '{c.licence}' not in the accepted list")
            excluded.append((c.package, c.version, c.orig, c.licence or "",
                             why + ("; " + c.evidence if c.evidence else "")))
            continue
        if digest in seen:
            skipped.append((c.package, c.orig, "duplicate of " + seen[digest]))
            continue
        src, evidence = c.file, c.evidence
        if convert:
            src = ps.flattened(cache, c.file, digest)
            evidence += ("; transparency composited over white, saved as PNG"
                         if pixels.flatten else "; converted to PNG")
            out_digest = sha256(src)
            if out_digest in heldout:
                skipped.append((c.package, c.orig, "held-out (" + heldout[out_digest] + ")"))
                continue
        else:
            out_digest = digest
        if pixels is not None and pixels.dhash in heldout_look:
            skipped.append((c.package, c.orig,
                            "held-out (other rendition of " + heldout_look[pixels.dhash] + ")"))
            continue
        if pixels is not None and pixels.dhash:
            k = renditions.get(pixels.dhash)
            if k is not None:
                other = kept[k]
                # keep the larger of two renditions of one picture, under the first one's name
                if other[2].width * other[2].height >= info.width * info.height:
                    skipped.append((c.package, c.orig, "other rendition of " + other[0]))
                    continue
                skipped.append((other[1].package, other[1].orig, "other rendition of " + other[0]))
                rel = other[0].rsplit(".", 1)[0] + "." + info.fmt
                seen[digest] = rel
                kept[k] = (rel, c._replace(evidence=evidence), info, out_digest,
                           os.path.getsize(src), src)
                continue
        used = names.setdefault(c.source, set())
        stem = _safe_name(c.name)
        name, n = stem, 1
        while name.lower() in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name.lower())
        rel = f"{c.source}/{name}.{info.fmt}"
        seen[digest] = rel
        if pixels is not None and pixels.dhash:
            renditions[pixels.dhash] = len(kept)
        kept.append((rel, c._replace(evidence=evidence), info, out_digest,
                     os.path.getsize(src), src))
    analysis.save()

    written = 0
    wanted = {k[0] for k in kept}
    for rel, c, info, digest, size, src in kept:
        dest = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        written += _copy_if_changed(src, dest, digest)
    removed = 0
    for source in sorted({k[1].source for k in kept} | set(os.listdir(out))):
        d = os.path.join(out, source)
        if source.startswith(".") or not os.path.isdir(d):
            continue
        for fn in os.listdir(d):
            if fn.lower().endswith(IMAGE_EXTS + (".part",)) and f"{source}/{fn}" not in wanted:
                os.remove(os.path.join(d, fn))
                removed += 1

    def write(name, header, rows):
        tmp = os.path.join(out, name + ".part")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_tsv(header))
            for r in rows:
                f.write(_tsv(r))
        os.replace(tmp, os.path.join(out, name))

    write("LICENSES.tsv",
          ["path", "package", "version", "original_path", "license", "copyright",
           "license_evidence", "width", "height", "bytes", "sha256", "category"],
          [(rel, c.package, c.version, c.orig, c.licence, c.copyright, c.evidence,
            info.width, info.height, size, digest, c.category)
           for rel, c, info, digest, size, src in kept])
    write("EXCLUDED.tsv",
          ["package", "version", "original_path", "license_found", "reason"], excluded)
    write("SKIPPED.tsv", ["package", "original_path", "reason"], skipped)

    # summary: per source, then per category
    by_source: Dict[str, list] = {}
    by_cat: Dict[str, list] = {}
    for rel, c, info, digest, size, src in kept:
        by_source.setdefault(c.source, []).append((info, size))
        by_cat.setdefault(c.category, []).append((info, size))
    print(f"{'source':22s} {'images':>6s} {'MB':>7s}  shorter side    longer side")
    total_n = total_b = 0
    for src_name, items in sorted(by_source.items()):
        shorts = [min(i.width, i.height) for i, _ in items]
        longs = [max(i.width, i.height) for i, _ in items]
        mb = sum(s for _, s in items) / 1e6
        total_n += len(items)
        total_b += sum(s for _, s in items)
        print(f"{src_name:22s} {len(items):6d} {mb:7.1f}  {min(shorts):5d}-{max(shorts):<5d}    "
              f"{min(longs):5d}-{max(longs):<5d}")
    print(f"{'total':22s} {total_n:6d} {total_b / 1e6:7.1f}")
    for cat, items in sorted(by_cat.items()):
        print(f"category {cat:22s} {len(items):6d} {sum(s for _, s in items) / 1e6:7.1f} MB")
    reasons: Dict[str, int] = {}
    for _p, _o, why in skipped:
        key = re.sub(r"\(.*|[0-9.]+|duplicate of .*|other rendition of .*", "", why).strip(" :;")
        key = key or why.split(" ")[0]
        reasons[key] = reasons.get(key, 0) + 1
    print(f"excluded (licence): {len(excluded)}, skipped (not wanted): {len(skipped)}, "
          f"files written: {written}, stale files removed: {removed}")
    for why, n in sorted(reasons.items(), key=lambda x: -x[1])[:25]:
        print(f"  skipped {n:6d}  {why}")
    return 0 if total_n else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
