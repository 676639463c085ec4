#!/usr/bin/env python3
"""How much of each image's colour a LINEAR map can read off the encoder's tokens and off the FAE
latent: ridge regressions from each token (alone or with its 3 x 3 neighbourhood) to its 14 x 14
patch of pixels, fitted on one folder's 224 px centre crops and scored (PSNR) on another's. It
frames the pixel decoder's figures: what the latent holds linearly, and the flat references of
`evaluate --reconstruct` (each image in its mean colour, each patch in its mean colour).

    tools/linear_probe.py --train .work/photos --heldout .work/heldout [--every 2] [--bin target/release/fae-studio]

Needs numpy, pillow and safetensors. Tokens and latents come from the binary's `features` and
`encode` commands (CPU backend, cached under --work)."""
import argparse, os, subprocess, sys
import numpy as np
from PIL import Image
from safetensors.numpy import load_file

import _common

P, G, S = 14, 16, 224
EXT = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff', '.gif')

def crop(path):
    # As the binary does: alpha over white, then shorter side to 224 and the centre square.
    im = Image.open(path)
    if im.mode in ('RGBA', 'LA', 'P', 'PA'):
        im = im.convert('RGBA')
        bg = Image.new('RGBA', im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        im = bg
    return np.asarray(_common.resize_shorter_center_crop(im.convert('RGB'), S), dtype=np.float32) / 255

def patches(img):
    return img.reshape(G, P, G, P, 3).transpose(0, 2, 1, 3, 4).reshape(G * G, P * P * 3)

def neighbourhood(x):
    d = x.shape[1]
    xp = np.pad(x.reshape(G, G, d), ((1, 1), (1, 1), (0, 0)), mode='edge')
    return np.concatenate([xp[i:i + G, j:j + G] for i in range(3) for j in range(3)], -1).reshape(G * G, -1)

def psnr(a, b):
    return -10 * np.log10(np.mean((np.clip(a, 0, 1) - b) ** 2) + 1e-12)

def load(folder, every, work, binary):
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.lower().endswith(EXT))[::every]
    os.makedirs(work, exist_ok=True)
    tokens, latents, targets = [], [], []
    for f in files:
        key = os.path.join(work, f.replace('/', '_'))
        try:
            for cmd, suffix in (('features', '.f'), ('encode', '.l')):
                if not os.path.exists(key + suffix + '.safetensors'):
                    subprocess.run([binary, '--backend', 'cpu', cmd, '--image', f, '--out', key + suffix + '.safetensors'],
                                   check=True, capture_output=True)
            tokens.append(load_file(key + '.f.safetensors')['patch_tokens'])
            latents.append(load_file(key + '.l.safetensors')['latent'].reshape(G * G, -1))
            targets.append(patches(crop(f)))
        except Exception as e:  # a file the binary refuses is left out, as training does
            print(f'skipped {f}: {e}', file=sys.stderr)
    return tokens, latents, targets

def ridge(xtr, ytr, xte, yte, lam=1.0):
    x, y = np.concatenate(xtr), np.concatenate(ytr)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    design = lambda v: np.concatenate([(v - mu) / sd, np.ones((len(v), 1), np.float32)], 1)
    xn = design(x)
    a = (xn.T @ xn).astype(np.float64) + lam * len(x) / 1000 * np.eye(xn.shape[1])
    w = np.linalg.solve(a, (xn.T @ y).astype(np.float64)).astype(np.float32)
    score = lambda xs, ys: np.mean([psnr(design(v) @ w, t) for v, t in zip(xs, ys)])
    return score(xtr, ytr), score(xte, yte)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--train', required=True)
    ap.add_argument('--heldout', required=True)
    ap.add_argument('--every', type=int, default=2, help='use every N-th training image')
    ap.add_argument('--bin', default='target/release/fae-studio')
    ap.add_argument('--work', default='.work/probe')
    a = ap.parse_args()
    ftr, ltr, ytr = load(a.train, a.every, a.work, a.bin)
    fte, lte, yte = load(a.heldout, 1, a.work, a.bin)
    print(f'{len(ytr)} training images, {len(yte)} held-out, 224 px')
    flat = lambda y, axis: np.broadcast_to(y.reshape(G * G, P * P, 3).mean(axis, keepdims=True), (G * G, P * P, 3)).reshape(G * G, -1)
    print(f'held-out, each image in its mean colour: {np.mean([psnr(flat(y, (0, 1)), y) for y in yte]):.2f} dB')
    print(f'held-out, each patch in its mean colour: {np.mean([psnr(flat(y, 1), y) for y in yte]):.2f} dB')
    print('| linear map from | inputs per token | training PSNR | held-out PSNR |')
    print('|---|---|---|---|')
    for name, xtr, xte in (('FAE latent', ltr, lte), ('encoder tokens', ftr, fte)):
        for hood, f in (('1 x 1', lambda v: v), ('3 x 3', neighbourhood)):
            tr, te = ridge([f(v) for v in xtr], ytr, [f(v) for v in xte], yte)
            print(f'| {name} | {hood} ({f(xtr[0]).shape[1]}) | {tr:.2f} dB | {te:.2f} dB |', flush=True)

if __name__ == '__main__':
    main()
