#!/usr/bin/env python3
"""The polynomial behind the AVX-512 sigmoid (src/layers/lanes.rs, Z32::sigmoid).

eʳ on |r| ≤ ln2/2 by a degree-5 polynomial whose largest relative error is as small as it
can be (the Remez exchange algorithm, in double precision: the error sought, ~7.5e-8, is far
above double's rounding). Prints the coefficients, highest degree first, as f32 literals
(shortest round-trip form), and the error before and after rounding them to f32. Standard
library only:

    python3 scripts/minimax_exp.py
"""
import math
import struct

DEGREE = 5
H = math.log(2) / 2


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def f32_literal(x):
    """The shortest decimal that rounds to the same f32."""
    for digits in range(1, 12):
        s = f"{x:.{digits}g}"
        if f32(float(s)) == f32(x):
            return s
    return repr(x)


def solve(a, b):
    """Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [row[:] + [v] for row, v in zip(a, b)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(m[r][i]))
        m[i], m[p] = m[p], m[i]
        for r in range(i + 1, n):
            f = m[r][i] / m[i][i]
            for c in range(i, n + 1):
                m[r][c] -= f * m[i][c]
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (m[i][n] - sum(m[i][c] * x[c] for c in range(i + 1, n))) / m[i][i]
    return x


def rel_err(c, r):
    return sum(ck * r**k for k, ck in enumerate(c)) / math.exp(r) - 1


def remez():
    m = DEGREE + 2  # points of equioscillation: DEGREE + 1 coefficients and the error
    nodes = [H * math.cos(math.pi * (m - 1 - i) / (m - 1)) for i in range(m)]
    grid = [-H + 2 * H * i / 20000 for i in range(20001)]
    for _ in range(20):
        # p(x_i)/e^{x_i} − 1 = (−1)^i E at every node
        sol = solve([[x**k / math.exp(x) for k in range(DEGREE + 1)] + [(-1) ** i] for i, x in enumerate(nodes)],
                    [1.0] * m)
        c = sol[:-1]
        # New nodes: the largest |error| between consecutive sign changes.
        err = [rel_err(c, r) for r in grid]
        ext, start = [], 0
        for i in range(1, len(grid) + 1):
            if i == len(grid) or (err[i] > 0) != (err[i - 1] > 0):
                ext.append(max(range(start, i), key=lambda j: abs(err[j])))
                start = i
        while len(ext) > m:  # drop the smaller end
            ext.pop(0 if abs(err[ext[0]]) < abs(err[ext[-1]]) else -1)
        if len(ext) < m:
            break
        nodes = [grid[i] for i in ext]
    return c


def main():
    c = remez()
    grid = [-H + 2 * H * i / 100000 for i in range(100001)]
    print("eʳ on |r| ≤ ln2/2, degree", DEGREE, "minimax, highest degree first:")
    print("[" + ", ".join(f32_literal(v) for v in reversed(c)) + "]")
    print(f"max relative error: {max(abs(rel_err(c, r)) for r in grid):.3g}",
          f"(coefficients rounded to f32: {max(abs(rel_err([f32(v) for v in c], r)) for r in grid):.3g};",
          f"f32 ulp of 1: {2.0**-23:.3g})")


if __name__ == "__main__":
    main()
