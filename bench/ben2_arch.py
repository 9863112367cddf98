"""SafeCut's own implementation of the BEN2 ``BEN_Base`` architecture, for a stand-in that costs what BEN2 costs.

Why: the real BEN2 weights cannot be fetched here, and every speed/memory figure must come from a graph with
BEN2's real structure. Written from the published structure (MVANet-style multi-view network, PramaLLC/BEN2),
with parameter names and shapes identical to the published checkpoint (94.13 M parameters) so a real
``state_dict`` would load; weights are random (seeded): speed and memory only, masks are meaningless.

* Input 1024²: four 512² quarters (local views) + the image halved to 512² (global view) = 5 views.
* Backbone: Swin-B (patch 4, embed 128, depths 2/2/18/2, heads 4/8/16/32, window 12 with zero padding
  to a multiple of 12, shifted windows with the -100 mask, MLP ratio 4); outputs: patch embedding +
  the four normed stages.
* Decoder: 3×3 conv + InstanceNorm + GELU laterals to 128 channels; MCLM (global view attends to pooled
  local views, then each quarter attends to its part of the global view) at 16²; four MCRM blocks
  (each quarter's tokens attend to its pooled global view: 16,384 × 5,376 at 128²) with 3×3 convs;
  full-resolution refinement: a 128→384→384→128 head at 256², a shallow 3→128 conv of the input at 1024²,
  3×3 convs at 512² and 1024², a 3×3 conv to one channel, sigmoid.
* ONNX as the published file: input ``input`` float32 [1,3,S,S], output ``output`` float16 [1,1,S,S]
  (sigmoid inside), static shape, opset 18.

``python -m bench.ben2_arch OUT.onnx [--size 1024] [--depths 2,2,18,2]`` builds one. Smaller ``size`` /
``depths`` (the quick bench) use the same code.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

ARCH_VERSION = 1          # bump when the graph changes: cached builds are keyed on it
EMBED, DEPTHS, HEADS, WINDOW = 128, (2, 2, 18, 2), (4, 8, 16, 32), 12
SIZE, OPSET, SEED = 1024, 18, 0


def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    return torch, nn, F


def make_model(depths=DEPTHS, seed: int = SEED):
    """The BEN_Base module (eval mode, random weights from ``seed``)."""
    torch, nn, F = _torch()

    def dims(x):                            # static shape as python ints (the tracer hands out tensors)
        return tuple(int(d) for d in x.shape)

    def to_tokens(x):                       # (B, C, H, W) -> (H*W, B, C), the decoder's sequence layout
        return x.flatten(2).permute(2, 0, 1)

    def from_tokens(x, h, w):               # (H*W, B, C) -> (B, C, H, W)
        return x.permute(1, 2, 0).reshape(dims(x)[1], dims(x)[2], h, w)

    def split_quarters(x):                  # (B, C, 2h, 2w) -> (4B, C, h, w): TL, TR, BL, BR
        b, c, hh, ww = dims(x)
        x = x.reshape(b, c, 2, hh // 2, 2, ww // 2).permute(2, 4, 0, 1, 3, 5)
        return x.reshape(4 * b, c, hh // 2, ww // 2)

    def join_quarters(x):                   # (4B, C, h, w) -> (B, C, 2h, 2w)
        n, c, h, w = dims(x)
        x = x.reshape(2, 2, n // 4, c, h, w).permute(2, 3, 0, 4, 1, 5)
        return x.reshape(n // 4, c, 2 * h, 2 * w)

    def cbr(cin, cout):                     # 3x3 conv, InstanceNorm (no affine), GELU
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout), nn.GELU())

    def bilinear_as(x, ref):
        return F.interpolate(x, size=dims(ref)[-2:], mode="bilinear")

    def sine_positions(h, w, feats):
        """DETR-style normalised sine embedding, (h*w, 1, 2*feats): a constant of the graph."""
        y = (np.arange(1, h + 1, dtype=np.float32)[:, None] * np.ones((1, w), np.float32))
        x = (np.ones((h, 1), np.float32) * np.arange(1, w + 1, dtype=np.float32)[None, :])
        y = (y - 0.5) / (h + 1e-6) * 2 * math.pi
        x = (x - 0.5) / (w + 1e-6) * 2 * math.pi
        dim_t = 10000.0 ** (2 * (np.arange(feats) // 2) / feats)

        def enc(v):
            p = v[:, :, None] / dim_t
            return np.stack([np.sin(p[:, :, 0::2]), np.cos(p[:, :, 1::2])], axis=3).reshape(h, w, feats)

        pos = np.concatenate([enc(y), enc(x)], axis=2).astype(np.float32)
        return torch.from_numpy(pos.reshape(h * w, 1, 2 * feats))

    class Attention(nn.Module):
        """Multi-head attention with nn.MultiheadAttention's parameter layout (packed in-projection)."""

        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
            self.out_proj = nn.Linear(dim, dim)
            nn.init.xavier_uniform_(self.in_proj_weight)

        def forward(self, q, k, v):           # (L, B, C) sequences
            L, B, C = dims(q)
            S, hd = dims(k)[0], C // self.heads
            wq, wk, wv = self.in_proj_weight.chunk(3)
            bq, bk, bv = self.in_proj_bias.chunk(3)
            q = F.linear(q, wq, bq).reshape(L, B * self.heads, hd).transpose(0, 1)
            k = F.linear(k, wk, bk).reshape(S, B * self.heads, hd).transpose(0, 1)
            v = F.linear(v, wv, bv).reshape(S, B * self.heads, hd).transpose(0, 1)
            a = torch.softmax(torch.bmm(q * (hd ** -0.5), k.transpose(1, 2)), -1)
            out = torch.bmm(a, v).transpose(0, 1).reshape(L, B, C)
            return self.out_proj(out)

    class FFN(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class WindowAttention(nn.Module):
        def __init__(self, dim, heads, win):
            super().__init__()
            self.heads, self.win = heads, win
            self.relative_position_bias_table = nn.Parameter(torch.randn((2 * win - 1) ** 2, heads) * 0.02)
            ys, xs = np.meshgrid(np.arange(win), np.arange(win), indexing="ij")
            coords = np.stack([ys.ravel(), xs.ravel()])                      # 2, win*win
            rel = (coords[:, :, None] - coords[:, None, :]) + (win - 1)      # 2, N, N
            index = rel[0] * (2 * win - 1) + rel[1]
            self.register_buffer("relative_position_index", torch.from_numpy(index.astype(np.int64)))
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x, mask):          # x (nW*B, N, C); mask (nW, N, N) or None
            Bw, N, C = dims(x)
            hd = C // self.heads
            qkv = self.qkv(x).reshape(Bw, N, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * (hd ** -0.5), qkv[1], qkv[2]
            attn = q @ k.transpose(-2, -1)
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
            attn = attn + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
            if mask is not None:
                nw = dims(mask)[0]
                attn = attn.view(Bw // nw, nw, self.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.heads, N, N)
            x = (torch.softmax(attn, -1) @ v).transpose(1, 2).reshape(Bw, N, C)
            return self.proj(x)

    class SwinBlock(nn.Module):
        def __init__(self, dim, heads, win, shift):
            super().__init__()
            self.win, self.shift = win, shift
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, heads, win)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = FFN(dim, 4 * dim)

        def forward(self, x, H, W, mask):
            B, L, C = dims(x)
            s, w = self.shift, self.win
            y = self.norm1(x).view(B, H, W, C)
            ph, pw = (w - H % w) % w, (w - W % w) % w
            y = F.pad(y, (0, 0, 0, pw, 0, ph))           # zero tokens, attended to like the original
            Hp, Wp = H + ph, W + pw
            if s:
                y = torch.roll(y, (-s, -s), (1, 2))
            win = y.view(B, Hp // w, w, Wp // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
            win = self.attn(win, mask if s else None)
            y = win.view(B, Hp // w, Wp // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
            if s:
                y = torch.roll(y, (s, s), (1, 2))
            y = y[:, :H, :W, :].reshape(B, H * W, C)
            x = x + y
            return x + self.mlp(self.norm2(x))

    class PatchMerging(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = nn.LayerNorm(4 * dim)

        def forward(self, x, H, W):
            B, _, C = dims(x)
            x = x.view(B, H, W, C)
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            return self.reduction(self.norm(x.view(B, -1, 4 * C)))

    def shift_mask(H, W, win, shift):
        """The (nW, N, N) -100/0 mask of shifted windows over the padded map (a graph constant)."""
        Hp, Wp = -(-H // win) * win, -(-W // win) * win
        region = np.zeros((Hp, Wp), np.float32)
        cuts = (slice(0, -win), slice(-win, -shift), slice(-shift, None))
        n = 0
        for hs in cuts:
            for ws in cuts:
                region[hs, ws] = n
                n += 1
        r = region.reshape(Hp // win, win, Wp // win, win).transpose(0, 2, 1, 3).reshape(-1, win * win)
        m = r[:, None, :] - r[:, :, None]
        return torch.from_numpy(np.where(m != 0, -100.0, 0.0).astype(np.float32))

    class Stage(nn.Module):
        def __init__(self, dim, depth, heads, win, down):
            super().__init__()
            self.win = win
            self.blocks = nn.ModuleList([SwinBlock(dim, heads, win, 0 if i % 2 == 0 else win // 2)
                                         for i in range(depth)])
            self.downsample = PatchMerging(dim) if down else None

        def forward(self, x, H, W):
            mask = shift_mask(H, W, self.win, self.win // 2)
            for blk in self.blocks:
                x = blk(x, H, W, mask)
            down = self.downsample(x, H, W) if self.downsample is not None else x
            return x, down

    class PatchEmbed(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.proj = nn.Conv2d(3, dim, 4, stride=4)
            self.norm = nn.LayerNorm(dim)

        def forward(self, x):
            x = self.proj(x)
            B, C, H, W = dims(x)
            x = self.norm(x.flatten(2).transpose(1, 2))
            return x.transpose(1, 2).reshape(B, C, H, W)

    class Swin(nn.Module):
        def __init__(self, embed, depths, heads, win):
            super().__init__()
            self.patch_embed = PatchEmbed(embed)
            dims = [embed * 2 ** i for i in range(len(depths))]
            self.dims = dims
            self.layers = nn.ModuleList([Stage(dims[i], depths[i], heads[i], win, i < len(depths) - 1)
                                         for i in range(len(depths))])
            for i, d in enumerate(dims):
                self.add_module(f"norm{i}", nn.LayerNorm(d))

        def forward(self, x):
            x = self.patch_embed(x)
            outs = [x]
            B, _, H, W = dims(x)
            x = x.flatten(2).transpose(1, 2)
            for i, layer in enumerate(self.layers):
                out, x = layer(x, H, W)
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(B, H, W, self.dims[i]).permute(0, 3, 1, 2))
                H, W = (H + 1) // 2, (W + 1) // 2
            return outs

    class MCLM(nn.Module):
        """Multi-view complementary localisation: global view <-> pooled local views, at the coarsest scale."""

        def __init__(self, dim, heads, pool_ratios):
            super().__init__()
            self.attention = nn.ModuleList([Attention(dim, heads) for _ in range(5)])
            self.linear1, self.linear2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
            self.linear3, self.linear4 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.pool_ratios = pool_ratios

        def forward(self, loc, glb):          # loc (4, C, h, w), glb (1, C, h, w)
            _, c, h, w = dims(loc)
            whole = join_quarters(loc)
            pools, poses = [], []
            for r in self.pool_ratios:
                p = F.adaptive_avg_pool2d(whole, (round(h / r), round(w / r)))
                pools.append(to_tokens(p))
                poses.append(sine_positions(*dims(p)[2:], c // 2))
            pools, poses = torch.cat(pools, 0), torch.cat(poses, 0)
            g = to_tokens(glb)
            g = g + self.attention[0](g + sine_positions(*dims(glb)[2:], c // 2), pools + poses, pools)
            g = self.norm1(g)
            g = self.norm2(g + self.linear2(F.gelu(self.linear1(g))))
            l = to_tokens(loc)                                               # (hw, 4, C)
            # the global view's quarter i (h/2 x w/2 tokens) is key/value for local view i
            gq = g.reshape(2, h // 2, 2, w // 2, 1, c).permute(1, 3, 0, 2, 4, 5).reshape(h * w // 4, 4, c)
            outs = [self.attention[i + 1](l[:, i:i + 1], gq[:, i:i + 1], gq[:, i:i + 1]) for i in range(4)]
            l = self.norm1(l + torch.cat(outs, 1))
            l = self.norm2(l + self.linear4(F.gelu(self.linear3(l))))
            return from_tokens(torch.cat([l, g], 1), h, w)

    class MCRM(nn.Module):
        """Multi-view complementary refinement: each local view attends to its pooled part of the global view."""

        def __init__(self, dim, heads, pool_ratios):
            super().__init__()
            self.attention = nn.ModuleList([Attention(dim, heads) for _ in range(4)])
            self.linear3, self.linear4 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.sal_conv = nn.Conv2d(dim, 1, 1)
            self.pool_ratios = pool_ratios

        def forward(self, x):                 # x (5, C, h, w): 4 local views + the global view
            _, c, h, w = dims(x)
            loc, glb = x[:4], x[4:]
            glb_q = split_quarters(glb)
            sal = torch.sigmoid(self.sal_conv(glb))
            sal = F.interpolate(sal, size=(2 * h, 2 * w), mode="nearest")
            loc = loc * split_quarters(sal)
            pools = torch.cat([F.adaptive_avg_pool2d(glb_q, (round(h / r), round(w / r))).flatten(2)
                               for r in self.pool_ratios], 2)                # (4, C, n)
            pools = pools.permute(0, 2, 1).unsqueeze(2)                       # (4, n, 1, C)
            q = loc.flatten(2).permute(0, 2, 1).unsqueeze(2)                  # (4, hw, 1, C)
            outs = torch.cat([self.attention[i](q[i], pools[i], pools[i]) for i in range(4)], 1)
            src = self.norm1(loc.reshape(4, c, -1).permute(2, 0, 1) + outs)
            src = self.norm2(src + self.linear4(F.gelu(self.linear3(src))))
            src = src.permute(1, 2, 0).reshape(4, c, h, w)
            glb = glb + F.interpolate(join_quarters(src), size=(h, w), mode="nearest")
            return torch.cat([src, glb], 0)

    class BENBase(nn.Module):
        def __init__(self, depths):
            super().__init__()
            e = EMBED
            self.backbone = Swin(e, depths, HEADS, WINDOW)
            for i in range(5, 0, -1):   # side outputs: in the checkpoint, unused at inference
                self.add_module(f"sideout{i}", nn.Sequential(nn.Conv2d(e, 1, 3, padding=1)))
            for i, cin in zip(range(5, 0, -1), (8 * e, 4 * e, 2 * e, e, e)):
                self.add_module(f"output{i}", cbr(cin, e))
            self.multifieldcrossatt = MCLM(e, 1, (1, 4, 8))
            for i in range(1, 5):
                self.add_module(f"conv{i}", cbr(e, e))
            for i in range(1, 5):
                self.add_module(f"dec_blk{i}", MCRM(e, 1, (2, 4, 8)))
            self.insmask_head = nn.Sequential(
                nn.Conv2d(e, 384, 3, padding=1), nn.InstanceNorm2d(384), nn.GELU(),
                nn.Conv2d(384, 384, 3, padding=1), nn.InstanceNorm2d(384), nn.GELU(),
                nn.Conv2d(384, e, 3, padding=1))
            self.shallow = nn.Sequential(nn.Conv2d(3, e, 3, padding=1))
            self.upsample1 = cbr(e, e)
            self.upsample2 = cbr(e, e)
            self.output = nn.Sequential(nn.Conv2d(e, 1, 3, padding=1))

        def forward(self, x):                 # x (1, 3, S, S) in 0..1 -> (1, 1, S, S) float16 probabilities
            shallow = self.shallow(x)
            glb = F.interpolate(x, scale_factor=0.5, mode="bilinear")
            views = torch.cat([split_quarters(x), glb], 0)                   # 5 views of S/2
            f0, f1, f2, f3, f4 = self.backbone(views)
            e5, e4, e3 = self.output5(f4), self.output4(f3), self.output3(f2)
            e2, e1 = self.output2(f1), self.output1(f0)
            e5 = self.multifieldcrossatt(e5[:4], e5[4:])
            e4 = self.conv4(self.dec_blk4(e4 + bilinear_as(e5, e4)))
            e3 = self.conv3(self.dec_blk3(e3 + bilinear_as(e4, e3)))
            e2 = self.conv2(self.dec_blk2(e2 + bilinear_as(e3, e2)))
            e1 = self.conv1(self.dec_blk1(e1 + bilinear_as(e2, e1)))
            y = join_quarters(e1[:4])
            y = self.insmask_head(y + bilinear_as(e1[4:], y))
            y = y + bilinear_as(shallow, y)
            y = self.upsample1(F.interpolate(y, scale_factor=2, mode="nearest"))
            y = F.interpolate(y + bilinear_as(shallow, y), scale_factor=2, mode="nearest")
            y = self.output(self.upsample2(y))
            return torch.sigmoid(y).to(torch.float16)

    torch.manual_seed(seed)
    model = BENBase(tuple(depths))
    with torch.no_grad():   # Swin-style init: small weights keep activations in a realistic range
        for name, p in model.named_parameters():
            if p.dim() > 1 and "relative_position" not in name:
                p.normal_(0, 0.02)
            elif name.endswith("bias"):
                p.zero_()
    return model.eval()


def param_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def export(model, path: str, size: int = SIZE) -> None:
    """ONNX with the published file's I/O: ``input`` f32 [1,3,S,S] -> ``output`` f16 [1,1,S,S], opset 18."""
    torch, _, _ = _torch()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".part"
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.onnx.export(model, (x,), tmp, input_names=["input"], output_names=["output"], opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)


def build(path: str, size: int = SIZE, depths=DEPTHS, seed: int = SEED) -> dict:
    """Build the stand-in ONNX at ``path`` (seconds on 2 cores: ~1-2 min at full size). Returns build facts."""
    import onnx

    t = time.perf_counter()
    model = make_model(depths, seed)
    params = param_count(model)
    export(model, path, size)
    m = onnx.load(path, load_external_data=False)
    return {"params": params, "size": size, "depths": list(depths), "seed": seed, "opset": OPSET,
            "nodes": len(m.graph.node), "arch_version": ARCH_VERSION, "export_seconds": round(time.perf_counter() - t, 1),
            "exporter": "torch.onnx.export (TorchScript), constant folding"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ben2_arch", description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=SIZE)
    ap.add_argument("--depths", default=",".join(map(str, DEPTHS)))
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    info = build(a.out, a.size, tuple(int(d) for d in a.depths.split(",")), a.seed)
    json.dump(info, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
