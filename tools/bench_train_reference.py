#!/usr/bin/env python3
"""PyTorch replicas of the `bench` training stages, to compare FAE Studio's training speed against.

    /work/pyenv/bin/python tools/bench_train_reference.py --stage train_pixel [--threads 2]
        [--size 224] [--batch 8] [--runs 5]

Stages, as `fae-studio bench --stage NAME` measures them (the same architecture, batch, size,
optimiser and loss terms, in eager mode, float32, on random features and images):
  train_fae            the FAE encoder (one attention layer) and the feature decoder: squared error
                       to the features + beta * KL + 0.1 * cosine distance
  train_pixel          the pixel decoder on noisy encoder features (sigma ~ U(0, 0.8) per sample):
                       L1 to the image + 0.1 * perceptual: the trainers' default shifted term (both
                       images cropped one patch smaller at the same random offset of 0-7 px; cosine
                       distance of the frozen DINOv2-S's patch tokens of the decoded crop to those
                       of the target's crop, computed without gradients)
  train_pixel_decoded  the same on the frozen FAE's restored features (computed without gradients)
  train_generator      the flow transformer: velocity regression on the linear interpolant
Each step: loss, backward, gradient clipping to norm 1, AdamW (the trainers' settings), an EMA
update of every weight, and the loss read back, as the Rust trainers take it. The FAE models'
architecture and weights come from assets/fae-default.safetensors and
assets/generator-default.safetensors (their stored configs), the perceptual encoder is
transformers' Dinov2Model on assets/dinov2-small.safetensors with its weights frozen.

One warm-up step, then `--runs` timed steps. One JSON object on stdout, like the Rust bench's row:
  {"stage":"train_pixel","backend":"pytorch-cpu","size":224,"batch":8,"runs":5,"median_ms":...,
   "min_ms":...,"ms_per_step":...,"images_per_s":...,"peak_mem_mib":...,"threads":2,...}
images_per_s and ms_per_step are taken at the fastest step (min_ms). peak_mem_mib is the
process's resident high-water mark (VmHWM), reset (/proc/self/clear_refs) after importing torch,
before the models are built, as the Rust bench resets it before loading its models.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import _common

STAGES = ["train_fae", "train_pixel", "train_pixel_decoded", "train_generator"]


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def read_checkpoint(path):
    """(config dict, {name: float32 tensor}) of a FAE Studio checkpoint."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
        tensors = {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}
    return config, tensors


def build(torch):
    nn, F = torch.nn, torch.nn.functional

    def rope_tables(gh, gw, hd, base):
        sec, half = hd // 2, hd // 4
        cos = torch.zeros(gh * gw, hd)
        sin = torch.zeros(gh * gw, hd)
        for y in range(gh):
            for x in range(gw):
                t = y * gw + x
                for axis, pos in ((0, y), (1, x)):
                    for i in range(half):
                        a = pos * base ** (-i / half)
                        for o in (i, i + half):
                            cos[t, axis * sec + o] = math.cos(a)
                            sin[t, axis * sec + o] = math.sin(a)
        return cos[None, None], sin[None, None]

    def rope(x, tables):
        cos, sin = tables
        hd = x.shape[-1]
        sec, half = hd // 2, hd // 4
        p = lambda s: x[..., s:s + half]  # noqa: E731
        return x * cos + torch.cat([-p(half), p(0), -p(sec + half), p(sec)], -1) * sin

    def swiglu_hidden(dim, ratio):
        return math.ceil(dim * ratio * 2 / 3 / 8) * 8

    class Attention(nn.Module):
        def __init__(s, dim, heads, head_dim):
            super().__init__()
            s.heads, s.head_dim = heads, head_dim
            s.qkv = nn.Linear(dim, 3 * heads * head_dim)
            s.out = nn.Linear(heads * head_dim, dim)

        def forward(s, x, tables=None):
            b, t, _ = x.shape
            q, k, v = s.qkv(x).view(b, t, 3, s.heads, s.head_dim).permute(2, 0, 3, 1, 4)
            if tables is not None:
                q, k = rope(q, tables), rope(k, tables)
            ctx = F.scaled_dot_product_attention(q, k, v)
            return s.out(ctx.transpose(1, 2).reshape(b, t, s.heads * s.head_dim))

    class SwiGlu(nn.Module):
        def __init__(s, dim, ratio):
            super().__init__()
            h = swiglu_hidden(dim, ratio)
            s.gate_up = nn.Linear(dim, 2 * h)
            s.down = nn.Linear(h, dim)

        def forward(s, x):
            g, u = s.gate_up(x).chunk(2, -1)
            return s.down(F.silu(g) * u)

    class Block(nn.Module):
        def __init__(s, dim, heads, ratio):
            super().__init__()
            s.norm1 = nn.RMSNorm(dim, eps=1e-6)
            s.attn = Attention(dim, heads, dim // heads)
            s.norm2 = nn.RMSNorm(dim, eps=1e-6)
            s.mlp = SwiGlu(dim, ratio)

        def forward(s, x, tables):
            x = x + s.attn(s.norm1(x), tables)
            return x + s.mlp(s.norm2(x))

    class FaeEncoder(nn.Module):
        def __init__(s, c):
            super().__init__()
            d = c["encoder_dim"]
            s.norm = nn.LayerNorm(d, eps=1e-5)
            s.attn = Attention(d, c["enc_heads"], c["enc_head_dim"])
            s.to_latent = nn.Linear(d, 2 * c["latent_channels"])

        def forward(s, f):
            x = f + s.attn(s.norm(f))
            mean, log_var = s.to_latent(F.gelu(x)).chunk(2, -1)
            return mean, log_var.clamp(-30, 20)

    class ViT(nn.Module):
        """Input linear, RoPE blocks, final RMSNorm (the feature and pixel decoders' trunk)."""

        def __init__(s, d_in, width, depth, heads, ratio, base):
            super().__init__()
            s.input = nn.Linear(d_in, width)
            s.blocks = nn.ModuleList(Block(width, heads, ratio) for _ in range(depth))
            s.norm = nn.RMSNorm(width, eps=1e-6)
            s.heads, s.base, s.tables = heads, base, {}

        def trunk(s, x, grid):
            x = s.input(x)
            key = grid
            if key not in s.tables:  # the Rust decoders rebuild theirs per call: a few microseconds
                s.tables[key] = rope_tables(grid[0], grid[1], x.shape[-1] // s.heads, s.base)
            for b in s.blocks:
                x = b(x, s.tables[key])
            return s.norm(x)

    class FeatureDecoder(ViT):
        def __init__(s, c):
            super().__init__(c["latent_channels"], c["dec_width"], c["dec_depth"], c["dec_heads"],
                             c["dec_mlp_ratio"], c.get("rope_base", 100.0))
            s.output = nn.Linear(c["dec_width"], c["encoder_dim"])

        def forward(s, z, grid):
            return s.output(s.trunk(z, grid))

    class PixelDecoder(ViT):
        def __init__(s, c):
            super().__init__(c["encoder_dim"], c["pix_width"], c["pix_depth"], c["pix_heads"],
                             c["pix_mlp_ratio"], c.get("rope_base", 100.0))
            head = c.get("pix_head", "linear")
            if head != "linear":
                raise SystemExit(f"the replica has the linear pixel head only, not {head}")
            s.p = c["pix_patch"]
            s.to_pixels = nn.Linear(c["pix_width"], 3 * s.p * s.p)

        def forward(s, f, grid):
            gh, gw, p = grid[0], grid[1], s.p
            y = s.to_pixels(s.trunk(f, grid))
            y = y.view(-1, gh, gw, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(-1, 3, gh * p, gw * p)
            return y + 0.5

    class FaeModel(nn.Module):
        def __init__(s, c):
            super().__init__()
            s.encoder = FaeEncoder(c)
            s.feature_decoder = FeatureDecoder(c)
            s.pixel_decoder = PixelDecoder(c)

    class TimeEmbedder(nn.Module):
        def __init__(s, w):
            super().__init__()
            s.fc1 = nn.Linear(256, w)
            s.fc2 = nn.Linear(w, w)
            s.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(128) / 128))

        def forward(s, t):
            a = (t * 1000.0)[:, None] * s.freqs[None]
            return s.fc2(F.silu(s.fc1(torch.cat([a.cos(), a.sin()], 1))))

    def modulate(x, shift, scale):
        return x * scale + x + shift

    class FlowBlock(nn.Module):
        def __init__(s, c):
            super().__init__()
            w = c["width"]
            s.norm1 = nn.RMSNorm(w, eps=1e-6)
            s.attn = Attention(w, c["heads"], w // c["heads"])
            s.norm2 = nn.RMSNorm(w, eps=1e-6)
            s.mlp = SwiGlu(w, c["mlp_ratio"])
            s.adaln = nn.Linear(w, 6 * w)

        def forward(s, x, cond, tables):
            m = [u[:, None] for u in s.adaln(cond).chunk(6, -1)]
            x = x + s.attn(modulate(s.norm1(x), m[0], m[1]), tables) * m[2]
            return x + s.mlp(modulate(s.norm2(x), m[3], m[4])) * m[5]

    class FinalLayer(nn.Module):
        def __init__(s, w, patch_dim):
            super().__init__()
            s.norm = nn.RMSNorm(w, eps=1e-6)
            s.adaln = nn.Linear(w, 2 * w)
            s.linear = nn.Linear(w, patch_dim)

    class FlowTransformer(nn.Module):
        def __init__(s, c):
            super().__init__()
            w, p = c["width"], c["patch"]
            s.c = c
            s.patch_embed = nn.Linear(p * p * c["channels"], w)
            s.time_embed = TimeEmbedder(w)
            s.class_embed = nn.Embedding(len(c["classes"]) + 1, w)
            s.blocks = nn.ModuleList(FlowBlock(c) for _ in range(c["depth"]))
            s.final_layer = FinalLayer(w, p * p * c["channels"])
            gh, gw = c["grid"][0] // p, c["grid"][1] // p
            s.tables = rope_tables(gh, gw, w // c["heads"], c.get("rope_base", 100.0))

        def forward(s, x, t, labels):
            c, p = s.c, s.c["patch"]
            (gh, gw), ch, b = c["grid"], c["channels"], x.shape[0]
            h, w = gh // p, gw // p
            x = x.reshape(b, h, p, w, p, ch).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, p * p * ch)
            cond = F.silu(s.time_embed(t) + s.class_embed(labels))
            x = s.patch_embed(x)
            for blk in s.blocks:
                x = blk(x, cond, s.tables)
            f = s.final_layer
            m = [u[:, None] for u in f.adaln(cond).chunk(2, -1)]
            x = f.linear(modulate(f.norm(x), m[0], m[1]))
            return x.reshape(b, h, w, p, p, ch).permute(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, ch)

    return FaeModel, FlowTransformer


def load_weights(model, tensors, prefix):
    """FAE Studio's parameter names and layouts (burn's linear weights are [in, out], norms'
    `gamma`/`beta`) onto the replica's."""
    import torch

    own = dict(model.named_parameters())
    loaded = set()
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):]
        key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
        if key not in own:
            continue
        if value.dim() == 2 and not key.startswith("class_embed"):
            value = value.t()
        with torch.no_grad():
            own[key].copy_(value.reshape(own[key].shape))
        loaded.add(key)
    missing = sorted(set(own) - loaded)
    if missing:
        raise SystemExit(f"weights missing from the checkpoint: {missing[:5]}")


def dinov2(torch):
    net = _common.dinov2_transformers()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=STAGES, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="default: all cores")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reset_peak_rss()
    FaeModel, FlowTransformer = build(torch)
    b, size = args.batch, args.size

    def cosine_distance(a, c):
        dot = (a * c).sum(-1)
        norms = ((a * a).sum(-1) * (c * c).sum(-1)).sqrt() + 1e-8
        return (1 - dot / norms).mean()

    if args.stage == "train_generator":
        path = _common.ASSETS / "generator-default.safetensors"
        config, tensors = read_checkpoint(path)
        has_train = any(k.startswith("train.") for k in tensors)
        model = FlowTransformer(config)
        load_weights(model, tensors, "train." if has_train else "model.")
        gh, gw = config["grid"]
        if size != gh * 14:
            raise SystemExit(f"the generator works on {gh}x{gw} latents: use --size {gh * 14}")
        x0 = torch.randn(b, gh * gw, config["channels"])
        eps = torch.randn(b, gh * gw, config["channels"])
        times = (torch.arange(b, dtype=torch.float32) + 0.5) / b
        labels = torch.arange(b) % (len(config["classes"]) + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=4e-4, betas=(0.9, 0.95), eps=1e-5,
                                weight_decay=0.0)
        decay = 0.999

        def loss_fn():
            tb = times[:, None, None]
            xt = x0 * (1 - tb) + eps * tb
            return ((model(xt, times, labels) - (eps - x0)) ** 2).mean()
    else:
        path = _common.ASSETS / "fae-default.safetensors"
        config, tensors = read_checkpoint(path)
        has_train = any(k.startswith("train.") for k in tensors)
        model = FaeModel(config)
        load_weights(model, tensors, "train." if has_train else "model.")
        g = size // config["patch_size"]
        grid = (g, g)
        features = torch.randn(b, g * g, config["encoder_dim"])
        targets = torch.rand(b, 3, size, size)
        opt = torch.optim.AdamW(model.parameters(), lr=4e-4, eps=1e-5, weight_decay=0.01)
        decay = 0.999
        perceptual, noise, feature_cosine = 0.1, 0.4, 0.1
        encoder = dinov2(torch) if args.stage != "train_fae" else None
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

        shift, patch = 7, config["patch_size"]

        def tokens_of(x):
            return encoder(pixel_values=(x - mean) / std).last_hidden_state[:, 1:]

        def pixel_loss(inputs):
            image = model.pixel_decoder(inputs, grid)
            loss = (image - targets).abs().mean()
            # As `train::loss::perceptual` with `--perceptual-shift 7`: the same random crop of
            # both images, so the encoder's patches straddle the decoder's.
            dy, dx = (int(v) for v in torch.randint(0, shift + 1, (2,)))
            side = size - patch

            def crop(x):
                return x[:, :, dy:dy + side, dx:dx + side]

            with torch.no_grad():
                target_tokens = tokens_of(crop(targets))
            return loss + perceptual * cosine_distance(tokens_of(crop(image)), target_tokens)

        if args.stage == "train_fae":
            def loss_fn():
                mu, log_var = model.encoder(features)
                z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
                restored = model.feature_decoder(z, grid)
                mse = ((restored - features) ** 2).mean()
                kl = (0.5 * (mu ** 2 + log_var.exp() - log_var - 1)).mean()
                return mse + config["beta"] * kl + feature_cosine * cosine_distance(restored, features)
        elif args.stage == "train_pixel":
            def loss_fn():
                sigma = (2 * noise * torch.rand(b)).view(b, 1, 1)
                return pixel_loss(features + torch.randn_like(features) * sigma)
        else:
            def loss_fn():
                with torch.no_grad():
                    restored = model.feature_decoder(model.encoder(features)[0], grid)
                return pixel_loss(restored)

    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    step_count = [0]

    def step():
        loss = loss_fn()
        value = loss.item()  # the trainers read the loss (NaN guard) before the backward pass
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        k = step_count[0]
        d = min(decay, (1 + k) / (10 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        step_count[0] += 1
        return value

    step()  # warm-up
    times_ms = []
    for _ in range(max(1, args.runs)):
        t = time.perf_counter()
        step()
        times_ms.append((time.perf_counter() - t) * 1e3)
    low = min(times_ms)
    print(json.dumps({
        "stage": args.stage, "backend": "pytorch-cpu", "adapter": f"torch {torch.__version__} eager",
        "model": path.name, "size": size, "batch": b, "runs": len(times_ms),
        "median_ms": round(statistics.median(times_ms), 2), "min_ms": round(low, 2),
        "peak_mem_mib": round(peak_rss_mib() or float("nan"), 1),
        "images_per_s": round(b * 1e3 / low, 3), "ms_per_step": round(low, 2),
        "threads": args.threads,
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
