#!/usr/bin/env python3
"""The PyTorch side of issue 22's photograph check: a careful PyTorch LeNet with the
usual MNIST-style preprocessing, scored on tests/fixtures/photo-digits, to set beside
`lenet predict --model mnist-*` on the same pictures (models/README.md has both).

The model: the relu preset's architecture (scripts/pytorch_lenet.py), Adam lr 2e-3 with a
cosine schedule, batch 64, 10 epochs, pixels standardised with MNIST's mean and std, seed 0.
The preprocessing, written independently of lenet's: grayscale; inverted when the border
is light; an adaptive threshold (each pixel against the mean of its neighbourhood, as
OpenCV's ADAPTIVE_THRESH_MEAN_C, so that uneven light is no ink) masks the ink; the ink's
grey levels are cropped to its bounding box, resized to fit 20×20 keeping the aspect ratio,
put in 28×28 and shifted so the centre of mass is at the centre.

    .venv/bin/pip install pillow
    .venv/bin/python scripts/photo_digits_pytorch.py [--photos tests/fixtures/photo-digits]
"""

import argparse
import glob
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_lenet import lenet, load  # noqa: E402

MEAN, STD = 0.1307, 0.3081


def local_mean(a, r):
    """The mean of the (2r+1)² square around each pixel (clipped), by integral images."""
    h, w = a.shape
    s = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    y0, y1 = np.clip(np.arange(h) - r, 0, h), np.clip(np.arange(h) + r + 1, 0, h)
    x0, x1 = np.clip(np.arange(w) - r, 0, w), np.clip(np.arange(w) + r + 1, 0, w)
    total = s[y1][:, x1] - s[y0][:, x1] - s[y1][:, x0] + s[y0][:, x0]
    return total / ((y1 - y0)[:, None] * (x1 - x0)[None, :])


def preprocess(path):
    g = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > 127:
        g = 255.0 - g
    r = max(3, max(g.shape) // 8)
    ink = np.where(g > local_mean(g, r) + 12, g - local_mean(g, r), 0.0)
    ys, xs = np.nonzero(ink)
    if len(ys) == 0:
        return np.zeros((28, 28), dtype=np.float32)
    crop = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    crop = crop / crop.max()
    h, w = crop.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS), dtype=np.float64)
    out = np.zeros((28, 28))
    top, left = (28 - nh) // 2, (28 - nw) // 2
    out[top:top + nh, left:left + nw] = small
    total = out.sum()
    if total > 0:
        cy = (out.sum(1) * np.arange(28)).sum() / total
        cx = (out.sum(0) * np.arange(28)).sum() / total
        out = np.roll(out, (round(14.0 - cy), round(14.0 - cx)), axis=(0, 1))
    return (out / 255.0).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", default="tests/fixtures/photo-digits")
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lenet-inputs", metavar="DIR",
                    help="also score the same model on lenet's own preprocessing of the photos "
                         "(the 28×28 PNGs of `lenet predict --save-input DIR`)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    train_x, train_y, test_x, test_y = load("mnist", args.data_dir)
    norm = lambda x: (x - MEAN) / STD  # noqa: E731
    net = lenet("relu")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = args.epochs * math.ceil(len(train_x) / 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_x))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss_fn(net(norm(train_x[idx])), train_y[idx]).backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(norm(test_x)).argmax(1) == test_y).float().mean().item()
        net.train()
        print(f"epoch {epoch + 1}/{args.epochs}  test acc {acc:.4f}", flush=True)
    files = sorted(glob.glob(os.path.join(args.photos, "*.jpg")))
    x = torch.from_numpy(np.stack([preprocess(f) for f in files])).reshape(-1, 1, 28, 28)
    net.eval()
    with torch.no_grad():
        pred = net(norm(x)).argmax(1).tolist()
    right = 0
    for f, p in zip(files, pred):
        label = int(os.path.basename(f)[0])
        right += p == label
        if p != label:
            print(f"wrong: {os.path.basename(f)} read as {p}")
    print(f"PyTorch relu LeNet (test acc {acc:.4f}): {right} of {len(files)} photographed digits")
    if args.lenet_inputs:
        stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
        x = np.stack([np.asarray(Image.open(os.path.join(args.lenet_inputs, f"{s}.28x28.png")), dtype=np.float32) / 255.0
                      for s in stems])
        with torch.no_grad():
            pred = net(norm(torch.from_numpy(x).reshape(-1, 1, 28, 28))).argmax(1).tolist()
        right = sum(p == int(s[0]) for s, p in zip(stems, pred))
        print(f"the same model on lenet's preprocessing: {right} of {len(files)}")


if __name__ == "__main__":
    main()
