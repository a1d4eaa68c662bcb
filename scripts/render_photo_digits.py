#!/usr/bin/env python3
"""Renders tests/fixtures/photo-digits/: handwritten-looking digits as a phone would
photograph them on paper, for `lenet predict` on pictures that are not MNIST's.

Each digit is a pen path (hand-designed strokes, two or three styles per digit, as people
write them: 1 with and without its flag, open and closed 4, 7 with and without a bar, ...),
smoothed, jittered point by point, slanted, rotated, squeezed and drawn with a varying pen
width in dark ink; then the paper: a light, tinted, unevenly lit background with grain, a
soft shadow, camera blur, any framing and size, JPEG. Seeded: the same files every run.

    .venv/bin/pip install pillow numpy
    .venv/bin/python scripts/render_photo_digits.py [--out tests/fixtures/photo-digits] [--per-digit 4]

File names are `<digit>-<n>.jpg`: the label is the first character.
"""

import argparse
import math
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Strokes in a unit box (x right, y down), each a list of points the pen passes through.
STYLES = {
    0: [[[(0.5, 0.05), (0.2, 0.2), (0.12, 0.5), (0.2, 0.82), (0.5, 0.95), (0.8, 0.82), (0.88, 0.5), (0.8, 0.18), (0.5, 0.05), (0.42, 0.1)]],
        [[(0.55, 0.08), (0.25, 0.15), (0.18, 0.5), (0.3, 0.88), (0.6, 0.92), (0.82, 0.6), (0.78, 0.2), (0.55, 0.08)]]],
    1: [[[(0.5, 0.05), (0.5, 0.95)]],
        [[(0.3, 0.25), (0.55, 0.05), (0.55, 0.95)]],
        [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)], [(0.35, 0.95), (0.75, 0.95)]]],
    2: [[[(0.18, 0.28), (0.3, 0.1), (0.55, 0.05), (0.78, 0.18), (0.78, 0.4), (0.5, 0.68), (0.15, 0.95), (0.85, 0.93)]],
        [[(0.2, 0.25), (0.45, 0.06), (0.75, 0.15), (0.72, 0.42), (0.2, 0.92), (0.35, 0.85), (0.85, 0.95)]]],
    3: [[[(0.2, 0.15), (0.5, 0.05), (0.78, 0.18), (0.7, 0.4), (0.45, 0.5), (0.75, 0.6), (0.82, 0.8), (0.5, 0.95), (0.18, 0.85)]],
        [[(0.2, 0.1), (0.8, 0.1), (0.45, 0.45), (0.75, 0.55), (0.8, 0.8), (0.5, 0.95), (0.2, 0.85)]]],
    4: [[[(0.6, 0.05), (0.15, 0.65), (0.88, 0.65)], [(0.65, 0.3), (0.65, 0.95)]],
        [[(0.25, 0.05), (0.2, 0.55), (0.8, 0.55)], [(0.72, 0.1), (0.72, 0.95)]]],
    5: [[[(0.8, 0.06), (0.28, 0.06), (0.22, 0.45), (0.5, 0.38), (0.78, 0.52), (0.8, 0.78), (0.55, 0.95), (0.2, 0.88)]],
        [[(0.25, 0.08), (0.2, 0.45), (0.55, 0.4), (0.8, 0.6), (0.7, 0.88), (0.4, 0.95), (0.18, 0.85)], [(0.25, 0.08), (0.8, 0.06)]]],
    6: [[[(0.72, 0.05), (0.4, 0.25), (0.2, 0.6), (0.3, 0.9), (0.6, 0.95), (0.8, 0.75), (0.65, 0.52), (0.35, 0.55), (0.22, 0.7)]],
        [[(0.6, 0.05), (0.3, 0.4), (0.22, 0.75), (0.45, 0.95), (0.75, 0.82), (0.7, 0.58), (0.42, 0.55), (0.25, 0.68)]]],
    7: [[[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
        [[(0.15, 0.1), (0.85, 0.08), (0.45, 0.95)], [(0.35, 0.5), (0.75, 0.5)]],
        [[(0.2, 0.2), (0.25, 0.08), (0.85, 0.1), (0.6, 0.5), (0.45, 0.95)]]],
    8: [[[(0.5, 0.5), (0.25, 0.32), (0.3, 0.1), (0.5, 0.05), (0.72, 0.12), (0.72, 0.32), (0.5, 0.5), (0.22, 0.7), (0.3, 0.92), (0.55, 0.96), (0.8, 0.8), (0.72, 0.62), (0.5, 0.5)]],
        [[(0.7, 0.15), (0.5, 0.05), (0.28, 0.18), (0.35, 0.38), (0.68, 0.6), (0.75, 0.85), (0.5, 0.96), (0.25, 0.85), (0.32, 0.62), (0.65, 0.38), (0.72, 0.2)]]],
    9: [[[(0.75, 0.3), (0.55, 0.45), (0.3, 0.4), (0.25, 0.2), (0.45, 0.05), (0.72, 0.1), (0.75, 0.3), (0.7, 0.95)]],
        [[(0.78, 0.25), (0.6, 0.42), (0.32, 0.38), (0.28, 0.15), (0.55, 0.05), (0.78, 0.2), (0.7, 0.6), (0.55, 0.95)]]],
}


def catmull_rom(points, steps=12):
    """A smooth curve through the points (the pen does not turn corners sharply)."""
    if len(points) < 3:
        a, b = np.array(points[0]), np.array(points[-1])
        return [tuple(a + (b - a) * t) for t in np.linspace(0, 1, steps * 2)]
    p = [points[0]] + list(points) + [points[-1]]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = (np.array(q) for q in p[i - 1:i + 3])
        for t in np.linspace(0, 1, steps, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(tuple(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)))
    out.append(tuple(p[-2]))
    return out


def pen_strokes(digit, rng):
    """The digit's strokes in pixels of a 400×400 canvas, varied as a hand varies them."""
    strokes = rng.choice(STYLES[digit])
    slant, angle = rng.uniform(-0.25, 0.3), math.radians(rng.uniform(-10, 10))
    sx, sy = rng.uniform(0.75, 1.1), rng.uniform(0.9, 1.1)
    jitter = rng.uniform(0.01, 0.035)
    out = []
    for stroke in strokes:
        pts = [(x + rng.gauss(0, jitter), y + rng.gauss(0, jitter)) for x, y in stroke]
        curve = catmull_rom(pts) if len(pts) > 2 else catmull_rom(pts)
        placed = []
        for x, y in curve:
            x, y = (x - 0.5) * sx, (y - 0.5) * sy
            x += slant * -y
            x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
            placed.append((200 + 260 * x, 200 + 260 * y))
        out.append(placed)
    return out


def paper(size, rng):
    """Light paper, tinted, unevenly lit, with grain and a soft shadow from one side."""
    h, w = size
    white = rng.uniform(215, 250)
    tint = np.array([white, white - rng.uniform(0, 10), white - rng.uniform(5, 30)])
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    gx, gy = rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25)
    light = 1.0 + gx * (xx - 0.5) + gy * (yy - 0.5)
    shadow = 1.0 - rng.uniform(0, 0.25) * np.clip(1.0 - xx * rng.uniform(2, 5), 0, 1)
    img = tint[None, None, :] * (light * shadow)[:, :, None]
    img += rng.uniform(2, 6) * np.random.default_rng(rng.randrange(1 << 30)).standard_normal((h, w, 1))
    return img


def render(digit, rng):
    canvas = Image.new("L", (400, 400), 0)
    draw = ImageDraw.Draw(canvas)
    width = rng.uniform(10, 26)
    for stroke in pen_strokes(digit, rng):
        for i, (x, y) in enumerate(stroke):
            r = width / 2 * (0.85 + 0.3 * math.sin(i / 7 + rng.random()))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        draw.line(stroke, fill=255, width=int(width * 0.9), joint="curve")
    ink = np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float64) / 255.0
    # Frame the digit anywhere in a larger sheet: it takes 35-75 % of the shorter side.
    side = int(400 / rng.uniform(0.45, 0.9))
    h, w = int(side * rng.uniform(0.85, 1.2)), side
    sheet = np.zeros((h, w))
    top, left = rng.randrange(0, h - 400 + 1), rng.randrange(0, w - 400 + 1)
    sheet[top:top + 400, left:left + 400] = ink
    colour = np.array(rng.choice([(25, 25, 35), (20, 30, 90), (40, 40, 40), (15, 20, 60)]), dtype=np.float64)
    img = paper((h, w), rng)
    alpha = sheet[:, :, None] * rng.uniform(0.8, 0.97)
    img = img * (1 - alpha) + colour[None, None, :] * alpha
    photo = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    long_side = rng.randrange(96, 321)
    scale = long_side / max(photo.size)
    return photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.LANCZOS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/photo-digits")
    ap.add_argument("--per-digit", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1998)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for digit in range(10):
        for n in range(args.per_digit):
            path = os.path.join(args.out, f"{digit}-{n}.jpg")
            render(digit, rng).save(path, quality=rng.randrange(70, 91))
            total += os.path.getsize(path)
    print(f"wrote {10 * args.per_digit} pictures to {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
