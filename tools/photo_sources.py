"""More openly licensed pictures for fetch_photos.sh: wallpapers, painted game art, sky-culture
illustrations, cut-out photo stamps and textures from Debian packages.

Not a script: collect_photos.py imports it.  Each source yields collect_photos.Candidate rows
(with a category: photo, painting-illustration or texture) and needs its pixels checked
(`pixel_checks`): the files are decoded with Pillow and left out when they are greyscale,
near-blank, mostly transparent, a normal map or a strip/atlas (judged on a neutral grey);
cut-outs with some transparency are saved flattened over white, as the app shows them.
Licences come from each package's debian/copyright: the last matching Files: stanza of a
machine-readable (DEP-5) file, matched against the installed path with leading folders removed
one by one (upstream paths are shorter than installed ones), or the per-file paragraphs of a
free-form one, or the sky culture's own info.ini.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import collect_photos as cp

PHOTO, PAINTING, TEXTURE = "photo", "painting-illustration", "texture"
ZAD_ROOT = "0ad-public"   # where fetch_photos.sh unpacks 0 A.D.'s art, in CACHE/x

# Wesnoth's campaigns: painted story art, portraits and maps
WESNOTH_CAMPAIGNS = ["wesnoth-1.16-" + c for c in (
    "did", "dm", "dw", "ei", "httt", "l", "low", "nr", "sof", "sota", "sotbe", "thot", "trow",
    "tsg", "ttb", "utbs")]

# Debian packages fetched besides collect_photos' own (fetch_photos.sh reads this list).
PACKAGES = [
    "gnome-backgrounds", "ukui-wallpapers", "desktop-base", "sway-backgrounds",
    "mypaint-data-extras", "tuxpaint-stamps-default", "stellarium-data",
    "wesnoth-1.16-data", "supertuxkart-data", "0ad-data",
] + WESNOTH_CAMPAIGNS + ["flightgear-data-base"]

# --------------------------------------------------------------------- name heuristics
# Textures that are not pictures: lighting and material maps, masks, UI pieces.
NOT_PICTURE_NAME = re.compile(
    r"(^|[_\-. ])(n|nm|nrm|norm|normal|normals|normalmap|bump|height|heightmap|disp|"
    r"displacement|spec|specular|gloss|glossmap|rough|roughness|metal|metallic|metalness|ao|"
    r"occlusion|ambientocclusion|lightmap|mask|alpha|opacity|emissive|emission|glow|shadow|"
    r"shadows|mat|rgb|ssao|fresnel|cubemap|noise|gradient|ramp|lut|curve|cursor|button|"
    r"icon|icons|font|arrow|banner|logo|flag|border|frame|progress|bar|slider|marker|"
    r"minimap|overlay|decal|particle|particles|smoke|spark|sprite|sprites|sheet|atlas|tiles?et)"
    r"([_\-. 0-9]|$)", re.I)
# (`_n`, `_s` etc. as a suffix just before the extension or a number)
SUFFIX_MAP = re.compile(r"[_\-](n|s|h|g|m|r|ao|ns|nrm|spec|norm)(\d*)$", re.I)


def _bare(path: str) -> str:
    """File name without any extension ('x.png.cached.dds' -> 'x')."""
    return os.path.basename(path).split(".")[0]


def name_skip(inst: str) -> str:
    stem = _bare(inst)
    if SUFFIX_MAP.search(stem):
        return "not a picture: material-map suffix in the name (" + SUFFIX_MAP.search(stem).group(0) + ")"
    m = NOT_PICTURE_NAME.search(stem)
    if m:
        return f"not a picture: '{m.group(2)}' in the name (map, mask, sprite or UI piece)"
    return ""


# --------------------------------------------------------------------------- licences

def dep5_lookup(stanzas: List[cp.Stanza], inst: str) -> Tuple[Optional[cp.Stanza], str, str]:
    """(stanza, glob, upstream path) for an installed path: tries the path with 0, 1, 2, ...
    leading folders removed and keeps the most specific (non-'*') match; else Files: *."""
    parts = inst.split("/")
    fallback: Tuple[Optional[cp.Stanza], str, str] = (None, "", inst)
    for i in range(len(parts)):
        src = "/".join(parts[i:])
        st, g = cp.match_dep5(stanzas, src)
        if st is None:
            continue
        if g not in ("*", "* (extension ignored)"):
            return st, g, src
        if fallback[0] is None:
            fallback = (st, g, src)
    return fallback


def dep5_licence(base: str, pkg: str):
    stanzas = cp.parse_dep5(os.path.join(base, "usr/share/doc", pkg, "copyright"))

    def lookup(inst: str):
        st, g, _src = dep5_lookup(stanzas, inst)
        if st is None:
            return None, "", "no debian/copyright stanza matches"
        ev = f"debian/copyright Files: {g}"
        if g == "*":
            ev += " (the package-wide stanza: no stanza names this file)"
        return cp.normalise_licence(st.licence), st.copyright, ev
    return lookup


def gnome_licences(path: str) -> Tuple[Dict[str, Tuple[str, str]], Optional[str]]:
    """gnome-backgrounds' free-form copyright: '- NAME' lines, then Copyright lines and a
    'Licensed under ...' line.  Returns ({glob: (licence, copyright)}, package licence)."""
    text = open(path, encoding="utf-8", errors="replace").read()
    out: Dict[str, Tuple[str, str]] = {}
    names: List[str] = []
    copyright_lines: List[str] = []
    section = text.split("Image Authors:", 1)[-1].split("\nLicenses:", 1)[0]
    for line in section.splitlines():
        s = line.strip()
        m = re.match(r"^-\s+(\S+?):?$", s)
        if m:
            if copyright_lines:          # a new group starts
                names, copyright_lines = [], []
            names.append(m.group(1))
        elif s.startswith("Copyright"):
            copyright_lines.append(s.replace("Copyright ©", "").strip())
        elif s.startswith("Licensed under"):
            lic = s[len("Licensed under"):].strip(" .")
            lic = re.sub(r"(?i)creative commons attribution-sharealike (\d\.\d) license",
                         r"CC-BY-SA-\1", lic)
            lic = re.sub(r"(?i)creative commons attribution (\d\.\d) license", r"CC-BY-\1", lic)
            for n in names:
                out[n] = (lic, "; ".join(copyright_lines))
    pkg = None
    lic_part = text.split("\nLicenses:", 1)[-1]
    if re.search(r"GNU General Public License as published by\s+the Free Software Foundation; "
                 r"either version 2 of the License, or\s+\(at your option\) any later version",
                 lic_part):
        pkg = "GPL-2+"
    return out, pkg


def skyculture_licence(info_ini: str) -> Tuple[Optional[str], str]:
    """The 'license' and 'author' lines of a Stellarium sky culture's info.ini."""
    lic, author = None, ""
    for line in open(info_ini, encoding="utf-8", errors="replace"):
        m = re.match(r"^\s*(license|author)\s*=\s*(.*)$", line, re.I)
        if m and m.group(1).lower() == "license":
            lic = m.group(2).strip()
        elif m:
            author = m.group(2).strip()
    if lic is None:
        return None, author
    parts = []
    for part in re.split(r"\s*\+\s*", lic):
        p = re.sub(r"(?i)\s*International Public License|\s*Unported|\s*License$", "", part).strip()
        p = re.sub(r"(?i)^CC (BY(?:-[A-Z]{2})*(?:-[A-Z]{2})?) (\d\.\d)$",
                   lambda m: "CC-" + m.group(1).upper() + "-" + m.group(2), p)
        p = re.sub(r"(?i)^GNU GPL v(\d)\.0$", r"GPL-\1", p)
        p = re.sub(r"(?i)^Free Art( License)?$", "FAL-1.3", p)
        parts.append(p)
    return " and ".join(parts), author


# ---------------------------------------------------------------------------- sources

class Spec(NamedTuple):
    source: str                 # output folder (class label)
    package: str
    roots: List[str]            # folders inside the package to scan
    category: Callable[[str], str]
    select: Callable[[str], str]  # installed path -> skip reason ("" = wanted)
    licence: Optional[Callable] = None   # installed path -> (licence, copyright, evidence)
    name: Optional[Callable[[str], str]] = None


def _under(inst: str, *dirs: str) -> bool:
    return any(f"/{d}/" in f"/{inst}" for d in dirs)


def _specs(cache: str) -> List[Spec]:
    x = os.path.join(cache, "x")
    specs = []

    # ---- wallpapers (paintings, illustrations, a few photos)
    gbase = os.path.join(x, "gnome-backgrounds")
    if os.path.isdir(gbase):
        table, pkg_lic = gnome_licences(os.path.join(gbase, "usr/share/doc/gnome-backgrounds/copyright"))

        def gnome_lic(inst):
            base = os.path.basename(inst)
            for g, (lic, copy) in table.items():
                if re.fullmatch(re.escape(g).replace(r"\*", ".*"), base, re.I) or \
                        re.fullmatch(re.escape(g).replace(r"\*", ".*"), os.path.splitext(base)[0], re.I):
                    return lic, copy, f"debian/copyright (free-form) Image Authors: {g}"
            if pkg_lic:
                return pkg_lic, "GNOME backgrounds authors", (
                    "debian/copyright (free-form) names no author for this file; the package's "
                    "Licenses: paragraph is GPL version 2 or later")
            return None, "", "not named in debian/copyright"
        specs.append(Spec("gnome", "gnome-backgrounds", ["usr/share/backgrounds/gnome"],
                          lambda i: PAINTING, lambda i: "", gnome_lic))
    specs.append(Spec("ukui", "ukui-wallpapers", ["usr/share/backgrounds"],
                      lambda i: PHOTO if re.search(r"calla|goldfish|desert|city", i) else PAINTING,
                      lambda i: ""))
    specs.append(Spec(
        "debian-art", "desktop-base", ["usr/share/desktop-base"], lambda i: PAINTING,
        lambda i: "" if re.search(r"-theme/(wallpaper|login|lockscreen|grub)/", i)
        else "not a wallpaper (logos, emblems, boot splash pieces)"))
    specs.append(Spec("sway", "sway-backgrounds", ["usr/share/backgrounds/sway"],
                      lambda i: PAINTING, lambda i: ""))
    specs.append(Spec("mypaint-papers", "mypaint-data-extras", ["usr/share/mypaint/backgrounds"],
                      lambda i: TEXTURE, lambda i: ""))

    # ---- cut-out photos and drawings (tux paint stamps: the held-out set's 26 come from here)
    specs.append(Spec("tuxpaint-stamps", "tuxpaint-stamps-default", ["usr/share/tuxpaint/stamps"],
                      lambda i: PAINTING if _under(i, "cartoon") else PHOTO,
                      lambda i: "" if "/thumbs/" not in i else "thumbnail"))

    # ---- Stellarium: sky-culture illustrations (licence per culture) and landscape panoramas
    sbase = os.path.join(x, "stellarium-data")
    sroot = "usr/share/stellarium"
    sky: Dict[str, Tuple[Optional[str], str]] = {}
    for d in sorted(os.listdir(os.path.join(sbase, sroot, "skycultures"))) \
            if os.path.isdir(os.path.join(sbase, sroot, "skycultures")) else []:
        ini = os.path.join(sbase, sroot, "skycultures", d, "info.ini")
        sky[d] = skyculture_licence(ini) if os.path.isfile(ini) else (None, "")
    st_dep5 = dep5_licence(sbase, "stellarium-data") if os.path.isdir(sbase) else None

    def stellarium_lic(inst):
        rel = inst[len(sroot) + 1:]
        if rel.startswith("skycultures/"):
            culture = rel.split("/")[1]
            lic, author = sky.get(culture, (None, ""))
            return lic, author, f"{sroot}/skycultures/{culture}/info.ini license line"
        lic, copy, ev = st_dep5(inst)
        return lic, copy, ev + ("; debian/copyright 4.1: all graphics are the Stellarium team's "
                                "(GPL) except those it lists (landscapes are not listed)")
    specs.append(Spec(
        "stellarium-art", "stellarium-data",
        [f"{sroot}/skycultures", f"{sroot}/landscapes"],
        lambda i: PHOTO if "/landscapes/" in i else PAINTING,
        lambda i: "" if "/skycultures/" in i or "/landscapes/" in i else "not wanted",
        stellarium_lic,
        lambda i: "-".join(i.split("/")[3:4] + [os.path.splitext(os.path.basename(i))[0]])))

    # ---- Wesnoth: painted portraits, story art and maps (GPL-2+ package-wide, free-form file)
    wroot = "usr/share/games/wesnoth/1.16"

    def wesnoth_select(inst):
        rel = inst[len(wroot) + 1:]
        if re.match(r"data/core/images/(portraits|story|maps)/", rel) or \
                re.match(r"data/campaigns/[^/]+/images/(portraits|story)/", rel) or \
                re.match(r"data/core/images/maps/l10n/", rel):
            return "" if "/transparent/" not in rel else "portrait variant without background"
        return "not painted art (unit sprites, terrain tiles, UI)"
    for pkg in ["wesnoth-1.16-data"] + WESNOTH_CAMPAIGNS:
        wcopy = os.path.join(x, pkg, "usr/share/doc", pkg, "copyright")
        wlic = None
        if os.path.isfile(wcopy) and re.search(
                r"GNU General Public License version 2\s+or at your option any later version",
                open(wcopy, encoding="utf-8", errors="replace").read()):
            wlic = "GPL-2+"
        specs.append(Spec(
            "wesnoth", pkg, [wroot + "/data"],
            lambda i: PAINTING, wesnoth_select,
            lambda i, wlic=wlic: (
                wlic, "2003-2022 David White and the Battle for Wesnoth contributors",
                "debian/copyright (free-form): the package is under the GNU GPL version 2 or "
                "at your option any later version") if wlic else (None, "", "no licence found"),
            lambda i: "-".join(p for p in i[len(wroot) + 1:].split("/")[:-1]
                               if p not in ("data", "core", "images", "campaigns", "l10n"))
            + "-" + os.path.splitext(os.path.basename(i))[0]))

    # ---- SuperTuxKart: textures of tracks, karts and the common texture folder
    kroot = "usr/share/games/supertuxkart/data"

    def stk_select(inst):
        rel = inst[len(kroot) + 1:]
        if not re.match(r"(textures|tracks|karts|models|library)/", rel):
            return "not a texture folder (GUI, editor, skins)"
        if "/skybox" in rel or re.search(r"(^|/)sky", os.path.basename(rel)):
            return "sky box face"
        if rel.endswith(("icon.png", "screenshot.jpg", "screenshot.png")) or \
                "screenshot" in rel or "icon" in os.path.basename(rel):
            return "icon or screenshot"
        return name_skip(inst)
    specs.append(Spec("supertuxkart", "supertuxkart-data", [kroot], lambda i: TEXTURE,
                      stk_select,
                      name=lambda i: "-".join(i[len(kroot) + 1:].split("/")[:-1]
                                              [:2] + [os.path.splitext(os.path.basename(i))[0]])))

    # ---- FlightGear: terrain, runway and scenery-model textures (GPL-2+ package-wide)
    froot = "usr/share/games/flightgear"

    def fg_select(inst):
        rel = inst[len(froot) + 1:]
        if not re.match(r"(Textures/(Terrain|Terrain\.winter|Runway|Globe|osm2city|Water)|"
                        r"Scenery/Models)/", rel):
            return "not a terrain or scenery texture folder (aircraft, sky, GUI, docs)"
        if rel.startswith("Scenery/Models/Aircraft/"):
            return "aircraft livery (UV atlas)"
        return name_skip(inst)
    specs.append(Spec("flightgear", "flightgear-data-base",
                      [f"{froot}/Textures", f"{froot}/Scenery/Models"], lambda i: TEXTURE,
                      fg_select,
                      name=lambda i: "-".join(i[len(froot) + 1:].split("/")[1:-1]
                                              + [os.path.splitext(os.path.basename(i))[0]])))

    # ---- 0 A.D.: textures and painted art inside public.zip (unpacked by fetch_photos.sh)
    zroot = ZAD_ROOT

    def zad_select(inst):
        rel = inst[len(zroot) + 1:]
        if re.match(r"art/textures/(terrain|skins|ui/loading|ui/session/portraits|"
                    r"ui/pregame/backgrounds|ui/load|ui/splash)", rel) is None:
            return "not a texture or art folder (UI pieces, particles, sky, cursors)"
        if "/portraits/emblems/" in rel or "/portraits/sheets/" in rel:
            return "civilisation emblem or portrait sheet (UI graphic, sprite sheet)"
        return name_skip(inst)

    def zad_category(inst):
        return PAINTING if "/ui/" in inst else TEXTURE
    specs.append(Spec("0ad", "0ad-data", [zroot + "/art/textures"], zad_category, zad_select,
                      name=lambda i: "-".join(i[len(zroot) + 1:].split("/")[2:-1] + [_bare(i)])))
    return specs


def candidates(cache: str, versions: Dict[str, str]) -> Iterator[cp.Candidate]:
    x = os.path.join(cache, "x")
    for spec in _specs(cache):
        base = os.path.join(x, spec.package)
        if spec.package not in versions or not os.path.isdir(base):
            continue
        lic_fn = spec.licence or dep5_licence(base, spec.package)
        for root in spec.roots:
            top = os.path.join(base, root)
            if not os.path.isdir(top):
                top = os.path.join(x, root)      # 0ad's unpacked archive lies beside the package
                base_for_rel = x
            else:
                base_for_rel = base
            for path in cp._images_under(top, cp.IMAGE_EXTS + (".dds",)):
                inst = os.path.relpath(path, base_for_rel).replace(os.sep, "/")
                skip = spec.select(inst)
                lic, copy, ev = (None, "", "") if skip else lic_fn(inst)
                if spec.package == "0ad-data" and not skip:
                    lic, copy, ev = ZAD_LICENCE(cache)
                name = spec.name(inst) if spec.name else cp._stem(path)
                orig = inst if base_for_rel == base else \
                    "usr/share/games/0ad/mods/public/public.zip:" + inst[len(ZAD_ROOT) + 1:]
                yield cp.Candidate(spec.source, spec.package, versions[spec.package], path, orig,
                                   name, lic, copy, ev, skip, spec.category(inst), True)


def ZAD_LICENCE(cache: str, _memo: Dict[str, tuple] = {}):
    if cache not in _memo:
        base = os.path.join(cache, "x", "0ad-data")
        st = cp.parse_dep5(os.path.join(base, "usr/share/doc/0ad-data/copyright"))
        star = next((s for s in st if s.globs == ["*"]), None)
        if star is None:
            _memo[cache] = (None, "", "no Files: * stanza in debian/copyright")
        else:
            _memo[cache] = (cp.normalise_licence(star.licence), star.copyright,
                            "debian/copyright Files: * (the game's art; public.zip is one file)")
    return _memo[cache]


# ----------------------------------------------------------------------- pixel checks

GREY = (128, 128, 128)    # the checks below judge cut-outs on a neutral grey
# Saved cut-outs are composited over white, as the app composites a user's cut-out (image_io): a
# model trained on grey surroundings paints grey where the user's picture is white.
BACKGROUND = (255, 255, 255)
MIN_OPAQUE = 0.4          # at least this share of pixels must be opaque
MAX_ASPECT = 4.5          # longer side / shorter side; more is a strip or an atlas
GREY_SPREAD = 3.0         # mean max-min over the colour channels below this: greyscale


class Pixels(NamedTuple):
    skip: str             # non-empty: left out, with the reason
    width: int
    height: int
    flatten: bool         # has some transparency: composite onto BACKGROUND when saved
    dhash: str            # 64-bit difference hash of the grey thumbnail (renditions)


def analyse(path: str) -> Pixels:
    from PIL import Image
    import numpy as np

    try:
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < cp.MIN_SIDE:
                return Pixels(f"too small ({w}x{h} < {cp.MIN_SIDE} px)", w, h, False, "")
            if max(w, h) > MAX_ASPECT * min(w, h):
                return Pixels(f"strip or atlas (aspect {max(w, h) / min(w, h):.1f} > {MAX_ASPECT})",
                              w, h, False, "")
            if im.format == "JPEG":
                im.draft("RGB", (256, 256))
            has_alpha = im.mode in ("RGBA", "LA", "PA") or \
                (im.mode == "P" and "transparency" in im.info)
            im = im.convert("RGBA" if has_alpha else "RGB")
            im.thumbnail((256, 256), Image.Resampling.BOX)
            a = np.asarray(im, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - any undecodable file is skipped
        return Pixels(f"cannot decode: {type(e).__name__}", 0, 0, False, "")
    flatten = False
    rgb = a[..., :3]
    if has_alpha:
        alpha = a[..., 3] / 255.0
        opaque = float((alpha > 0.5).mean())
        if opaque < MIN_OPAQUE:
            return Pixels(f"mostly transparent ({100 * (1 - opaque):.0f} % clear)", w, h, False, "")
        if float(alpha.min()) < 1.0:
            flatten = True
            rgb = rgb * alpha[..., None] + np.array(GREY, np.float32) * (1 - alpha[..., None])
        sel = alpha > 0.5
    else:
        sel = np.ones(rgb.shape[:2], bool)
    px = rgb[sel]
    spread = float((px.max(axis=1) - px.min(axis=1)).mean())
    if spread < GREY_SPREAD:
        return Pixels(f"greyscale (mean channel spread {spread:.1f})", w, h, False, "")
    luma = px @ np.array([0.299, 0.587, 0.114], np.float32)
    if float(luma.std()) < 8.0:
        return Pixels(f"near-blank (luminance std {float(luma.std()):.1f})", w, h, False, "")
    mean = px.mean(axis=0)
    if mean[2] > 170 and abs(mean[0] - 128) < 40 and abs(mean[1] - 128) < 40 and \
            mean[2] > mean[0] + 40:
        return Pixels("normal map (mean colour near 128,128,255)", w, h, False, "")
    # colour count on the thumbnail: very few colours = flat UI graphic
    q = (rgb[sel].astype(np.int32) // 8)
    colours = len(np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2]))
    if colours < 24:
        return Pixels(f"flat graphic ({colours} colours)", w, h, False, "")
    g = (rgb @ np.array([0.299, 0.587, 0.114], np.float32))
    from PIL import Image as _I
    t = np.asarray(_I.fromarray(g.astype(np.uint8)).resize((9, 8), _I.Resampling.BOX), np.int16)
    bits = (t[:, 1:] > t[:, :-1]).flatten()
    dh = "%016x" % int("".join("1" if b else "0" for b in bits), 2)
    return Pixels("", w, h, flatten, dh)


class AnalysisCache:
    """Pixel checks keyed by (path, size, mtime), kept in CACHE/analysis.json for reruns."""

    def __init__(self, cache: str):
        self.path = os.path.join(cache, "analysis.json")
        try:
            self.data = json.load(open(self.path, encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}
        self.dirty = 0

    def get(self, path: str) -> Pixels:
        st = os.stat(path)
        key = f"{path}|{st.st_size}|{int(st.st_mtime)}"
        hit = self.data.get(key)
        if hit is not None:
            m = re.match(r"greyscale \(mean channel spread ([0-9.]+)\)", hit[0])
            if not (m and float(m.group(1)) >= GREY_SPREAD):   # judged with an older bound
                return Pixels(*hit)
        res = analyse(path)
        self.data[key] = list(res)
        self.dirty += 1
        if self.dirty % 500 == 0:
            self.save()
        return res

    def shape(self, path: str) -> Tuple[float, int]:
        """(share of the most common colour, number of colours) of a 64 px thumbnail composited
        onto GREY, cached like get(): an atlas of parts leaves a flat background between them,
        and a drawing has few colours."""
        st = os.stat(path)
        key = f"shape|{path}|{st.st_size}|{int(st.st_mtime)}"
        hit = self.data.get(key)
        if hit is None:
            hit = list(_shape(path))
            self.data[key] = hit
            self.dirty += 1
        return hit[0], hit[1]

    def save(self):
        tmp = self.path + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def _shape(path: str) -> Tuple[float, int]:
    from PIL import Image
    import numpy as np

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (128, 128))
            im = im.convert("RGBA")
            im.thumbnail((64, 64), Image.Resampling.NEAREST)
            bg = Image.new("RGBA", im.size, GREY + (255,))
            bg.alpha_composite(im)
            a = np.asarray(bg.convert("RGB"), dtype=np.int32) // 16
    except Exception:  # noqa: BLE001
        return 1.0, 0
    codes = (a[..., 0] * 256 + a[..., 1] * 16 + a[..., 2]).ravel()
    counts = np.bincount(codes, minlength=4096)
    return float(counts.max()) / codes.size, int((counts > 0).sum())


# Folders whose textures are often UV atlases of a model's parts (checked with ATLAS_FLAT)
ATLAS_PRONE = re.compile(r"Scenery/Models/(?!Trees/)|art/textures/skins/|"
                         r"supertuxkart/data/(karts|models|library)/")
ATLAS_FLAT = 0.2          # share of one flat colour above which such a texture is an atlas
DRAWING_COLOURS = 60      # tux paint stamps with fewer colours (64 px, 4 bits) are drawings


def flattened(cache: str, path: str, digest: str) -> str:
    """A PNG of the file composited over BACKGROUND, kept in CACHE/flat-white/ (made once)."""
    from PIL import Image

    out_dir = os.path.join(cache, "flat-white")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, digest + ".png")
    if not os.path.isfile(out):
        with Image.open(path) as im:
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, BACKGROUND + (255,))
            bg.alpha_composite(im)
            tmp = out + ".part"
            bg.convert("RGB").save(tmp, format="PNG", optimize=False, compress_level=6)
        os.replace(tmp, out)
    return out


def heldout_hashes(repo: str) -> Dict[str, str]:
    out = {}
    path = os.path.join(repo, "assets", "heldout.tsv")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        i, j = header.index("sha256"), header.index("path")
        for line in f:
            row = line.rstrip("\n").split("\t")
            if len(row) > i:
                out[row[i]] = row[j]
    return out


def heldout_rows(repo: str) -> List[Dict[str, str]]:
    with open(os.path.join(repo, "assets", "heldout.tsv"), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
