#!/usr/bin/env python3
"""Copy openly licensed sample photos out of the scikit-image wheel.

How to run (a second or two):

    bash tools/setup_python.sh            # once: creates the venv (default /work/pyenv)
    /work/pyenv/bin/python tools/make_samples.py

Writes
  assets/samples/chelsea.png     451x300, pixel-identical to skimage.data.chelsea() (CC0)
  assets/samples/coffee.png      480x320, skimage.data.coffee() resized (CC0)
  assets/samples/astronaut.png   448x448, skimage.data.astronaut() resized (public domain)
  assets/samples/LICENSES.md     origin and licence of each file
  tests/fixtures/photo_224.png   chelsea, shorter side -> 224 (PIL bicubic), centre crop 224

Resizes use PIL's LANCZOS filter and every PNG is written with optimize=True, so each
file stays under 400 KB.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import _common

# name -> (skimage.data function, output size (W, H) or None for original, licence line)
PHOTOS = {
    "chelsea": (None, "CC0; scikit-image: \"No copyright restrictions. CC0 by the photographer (Stefan van der Walt).\"",
                "Chelsea the cat."),
    "coffee": ((480, 320), "CC0; scikit-image: \"This photograph is courtesy of Pikolo Espresso Bar. [...] "
               "No copyright restrictions. CC0 by the photographer (Rachel Michetti).\"",
               "A cup of coffee on a wooden table."),
    "astronaut": ((448, 448), "Public domain (NASA); scikit-image: \"No known copyright restrictions, released into "
                  "the public domain.\"",
                  "Astronaut Eileen Collins, from the NASA Great Images database."),
}


def main() -> None:
    import skimage
    from skimage import data

    _common.SAMPLES.mkdir(parents=True, exist_ok=True)
    _common.FIXTURES.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (size, licence, desc) in PHOTOS.items():
        arr = getattr(data, name)()
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, (name, arr.shape)
        img = Image.fromarray(arr)
        orig = img.size
        if size is not None:
            img = img.resize(size, Image.Resampling.LANCZOS)
        path = _common.SAMPLES / f"{name}.png"
        img.save(path, "PNG", optimize=True)
        nbytes = path.stat().st_size
        if nbytes >= 400_000:
            raise SystemExit(f"{path} is {nbytes} bytes, over 400 KB")
        what = ("original pixels, re-encoded as PNG" if size is None else
                f"resized from {orig[0]}x{orig[1]} to {size[0]}x{size[1]} (PIL LANCZOS)")
        rows.append((name, img.size, nbytes, desc, licence, what))
        print(f"{path.relative_to(_common.REPO)}: {img.size[0]}x{img.size[1]}, {nbytes} bytes")

    crop = _common.chelsea_224()
    p224 = _common.FIXTURES / "photo_224.png"
    Image.fromarray(crop).save(p224, "PNG", optimize=True)
    back = np.asarray(Image.open(p224).convert("RGB"))
    assert np.array_equal(back, crop)
    print(f"{p224.relative_to(_common.REPO)}: 224x224, {p224.stat().st_size} bytes")

    lines = [
        "# Sample photos: origin and licences",
        "",
        f"All three come from the scikit-image {skimage.__version__} wheel on PyPI (`skimage/data/`),",
        "where scikit-image's own documentation (`skimage.data.<name>` docstrings) states the",
        "licence quoted below. Written by `tools/make_samples.py`.",
        "",
        "| file | size | content | licence | what was done |",
        "|---|---|---|---|---|",
    ]
    for name, (w, h), nbytes, desc, licence, what in rows:
        lines.append(f"| `{name}.png` | {w}x{h}, {nbytes // 1000} KB | {desc} | {licence} | "
                     f"from `skimage/data/{name}.png`; {what} |")
    lines += [
        "",
        "`tests/fixtures/photo_224.png` is `chelsea` with the shorter side resized to 224",
        "(PIL bicubic) and centre-cropped to 224x224; same licence (CC0).",
        "",
    ]
    (_common.SAMPLES / "LICENSES.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
