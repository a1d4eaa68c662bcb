#!/usr/bin/env python3
"""LeNet-5 of 1998 in PyTorch, the peer of lenet's `lenet5` preset.

The module is lenet's layer list as an nn.Sequential with the same indices, so lenet's
checkpoints load with load_state_dict(strict=True) (the optim.* tensors left out):

    0 Conv2d(1, 6, 5)        1 ScaledTanh   2 Subsample(6)    3 ScaledTanh
    4 MaskedConv2d(6, 16, 5, Table I)       5 ScaledTanh      6 Subsample(16)   7 ScaledTanh
    8 Conv2d(16, 120, 5)     9 ScaledTanh   10 Flatten        11 Linear(120, 84)
    12 ScaledTanh            13 RBF(84 -> 10, the 7x12 digit bitmaps), output -y

The bitmaps are read from lenet's source (src/layers/rbf.rs), so there is one copy of them.
Inputs: the 28x28 digit in a 32x32 frame, background -0.1, full ink 1.175.

    scripts/pytorch_lenet5.py eval CKPT            # test accuracy of a lenet checkpoint (--json)
    scripts/pytorch_lenet5.py time --steps 3000    # SDLM at one pattern per update: patterns/s
    scripts/pytorch_lenet5.py fixture [--check]   # tests/fixtures/pytorch_lenet5.safetensors

The fixture (tests/pytorch_lenet5.rs compares lenet against it) holds, float32:
    params.<key>   weights: torch.manual_seed(0), uniform in +-2.4/F_in (C3's by each map's
                   own fan-in, its left-out kernels zero), subsampling coefficients +-0.6
    x              (8, 1, 32, 32): the first 8 MNIST test images, framed and scaled
    labels uint8   (8)
    outputs        (8, 10): -y, the RBF layer's output
    loss           (): equation 9 (j = 10), the mean over the 8
    mse_loss       (): equation 8, the mean of y_correct
    grad.<key>     the gradient of the equation-9 loss for every parameter

`time` runs what lenet's recipe runs per pattern: zero_grad, forward, equation 9, backward,
and the SDLM update p -= lr / (mu + h) * g with a fixed h (lenet re-estimates h once per
pass; that costs 500 patterns' worth of work in 60,000, left out of both timings).
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_lenet import load  # noqa: E402 (the same IDX reader and search path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C3_TABLE = [
    [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [0, 4, 5], [0, 1, 5],
    [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [0, 3, 4, 5], [0, 1, 4, 5], [0, 1, 2, 5],
    [0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5], [0, 1, 2, 3, 4, 5],
]
J = 10.0  # equation 9's j, as lenet's spec (src/spec.rs, LENET5_J)


def digit_bitmaps():
    """The ten 7x12 bitmaps of src/layers/rbf.rs as a (10, 84) tensor of +-1."""
    src = open(os.path.join(ROOT, "src", "layers", "rbf.rs")).read()
    block = src[src.index("pub const DIGITS_7X12"):]
    block = block[: block.index("];")]
    pictures = re.findall(r'"([#. ]+)"', block)
    rows = [[1.0 if c == "#" else -1.0 for c in p if c in "#."] for p in pictures]
    assert len(rows) == 10 and all(len(r) == 84 for r in rows), "src/layers/rbf.rs: 10 bitmaps of 84"
    return torch.tensor(rows)


class ScaledTanh(nn.Module):
    def forward(self, x):
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsample(nn.Module):
    """Each output: the sum of a 2x2 block of its map, times the map's coefficient, plus its bias."""

    def __init__(self, maps):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(maps))
        self.bias = nn.Parameter(torch.zeros(maps))

    def forward(self, x):
        s = F.avg_pool2d(x, 2, divisor_override=1)
        return s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose output map o reads only the input maps table[o]."""

    def __init__(self, cin, cout, k, table):
        super().__init__(cin, cout, k)
        mask = torch.zeros(cout, cin, 1, 1)
        for o, row in enumerate(table):
            mask[o, row] = 1.0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias)


class RBF(nn.Module):
    """-y_i = -sum_j (x_j - c_ij)^2 for fixed bitmaps c (not parameters)."""

    def __init__(self, centres):
        super().__init__()
        self.register_buffer("centres", centres, persistent=False)

    def forward(self, x):
        return -((x.unsqueeze(1) - self.centres.unsqueeze(0)) ** 2).sum(dim=2)


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), ScaledTanh(), Subsample(6), ScaledTanh(),
        MaskedConv2d(6, 16, 5, C3_TABLE), ScaledTanh(), Subsample(16), ScaledTanh(),
        nn.Conv2d(16, 120, 5), ScaledTanh(), nn.Flatten(),
        nn.Linear(120, 84), ScaledTanh(), RBF(digit_bitmaps()),
    )


def map_loss(out, y, j=J):
    """Equation 9 on outputs -y_i: mean of y_correct + log(e^-j + sum_i e^-y_i)."""
    rubbish = torch.full((out.shape[0], 1), -j, dtype=out.dtype)
    return (-out.gather(1, y.view(-1, 1)).squeeze(1) + torch.logsumexp(torch.cat([out, rubbish], 1), 1)).mean()


def frame(x):
    """(N, 1, 28, 28) in [0, 1] -> (N, 1, 32, 32), background -0.1, ink 1.175."""
    return F.pad(x, (2, 2, 2, 2)) * 1.275 - 0.1


def cmd_eval(args):
    from safetensors.torch import load_file

    net = lenet5()
    sd = {k: v for k, v in load_file(args.checkpoint).items() if not k.startswith("optim.")}
    net.load_state_dict(sd, strict=True)
    _, _, test_x, test_y = load("mnist", args.data_dir)
    x = frame(test_x)
    with torch.no_grad():
        out = torch.cat([net(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    acc = (out.argmax(1) == test_y).float().mean().item()
    print(f"test acc {acc:.4f}")
    if args.json:
        print(json.dumps({"test_acc": acc}))


FIXTURE = os.path.join(ROOT, "tests", "fixtures", "pytorch_lenet5.safetensors")


def fixture_tensors(data_dir):
    torch.manual_seed(0)
    net = lenet5()
    with torch.no_grad():
        for i, m in enumerate(net):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                per_unit = m.weight[0].numel()
                fan_in = torch.full((m.weight.shape[0],), float(per_unit))
                if isinstance(m, MaskedConv2d):
                    fan_in = m.mask.flatten(1).sum(1) * m.weight[0, 0].numel()
                bound = (2.4 / fan_in).view(-1, *[1] * (m.weight.dim() - 1))
                m.weight.copy_((torch.rand_like(m.weight) * 2 - 1) * bound)
                m.bias.copy_((torch.rand_like(m.bias) * 2 - 1) * bound.flatten())
                if isinstance(m, MaskedConv2d):
                    m.weight.mul_(m.mask)
            elif isinstance(m, Subsample):
                m.weight.uniform_(-0.6, 0.6)
                m.bias.uniform_(-0.6, 0.6)
    _, _, test_x, test_y = load("mnist", data_dir)
    x, y = frame(test_x[:8]), test_y[:8]
    out = net(x)
    loss = map_loss(out, y)
    loss.backward()
    mse = (-out.gather(1, y.view(-1, 1))).mean()
    t = {f"params.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    t.update({f"grad.{k}": p.grad.clone() for k, p in net.named_parameters()})
    t.update({"x": x, "labels": y.to(torch.uint8), "outputs": out.detach(), "loss": loss.detach(),
              "mse_loss": mse.detach()})
    return {k: v.contiguous() for k, v in t.items()}


def cmd_fixture(args):
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)
    t = fixture_tensors(args.data_dir)
    if args.check:
        # Within pytorch_reference.py's tolerance: PyTorch's float32 kernels differ in the
        # last bits from one CPU to another.
        from pytorch_reference import compare

        problems = compare(t, FIXTURE)
        for problem in problems:
            print(f"{FIXTURE}: {problem}", file=sys.stderr)
        if problems:
            sys.exit(f"{FIXTURE} differs from what this script computes")
        print(f"{FIXTURE}: as this script computes it ({len(t)} tensors)")
    else:
        save_file(t, FIXTURE, metadata={"lenet.reference": "scripts/pytorch_lenet5.py fixture", "torch": torch.__version__})
        print(f"wrote {FIXTURE} ({os.path.getsize(FIXTURE)} bytes)")


def cmd_time(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = lenet5()
    with torch.no_grad():
        for m in net.modules():
            # LeCun's init, +-2.4/F_in (the mask leaves C3's fan-in approximate here; timing only).
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.uniform_(-2.4 / fan_in, 2.4 / fan_in)
                m.bias.uniform_(-2.4 / fan_in, 2.4 / fan_in)
            elif isinstance(m, Subsample):
                m.weight.uniform_(-0.6, 0.6)
                m.bias.uniform_(-0.6, 0.6)
    params = list(net.parameters())
    denoms = [torch.full_like(p, args.mu) for p in params]
    train_x, train_y, _, _ = load("mnist", args.data_dir)
    x, y = frame(train_x[: args.steps]), train_y[: args.steps]
    start = time.perf_counter()
    for i in range(args.steps):
        for p in params:
            p.grad = None
        loss = map_loss(net(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        with torch.no_grad():
            for p, d in zip(params, denoms):
                p.addcdiv_(p.grad, d, value=-args.lr)
    secs = time.perf_counter() - start
    rate = args.steps / secs
    print(f"{rate:.0f} patterns/sec on cpu ({args.threads} thread{'s' if args.threads > 1 else ''}), "
          f"torch {torch.__version__}")
    if args.json:
        print(json.dumps({"patterns_per_sec": rate, "threads": args.threads, "steps": args.steps}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="test accuracy of a lenet lenet5 checkpoint")
    e.add_argument("checkpoint")
    f = sub.add_parser("fixture", help="write (or --check) tests/fixtures/pytorch_lenet5.safetensors")
    f.add_argument("--check", action="store_true")
    t = sub.add_parser("time", help="SDLM at one pattern per update: patterns/s")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--mu", type=float, default=1.0)
    for s in (e, t, f):
        s.add_argument("--data-dir")
        s.add_argument("--json", action="store_true")
    args = p.parse_args()
    {"eval": cmd_eval, "time": cmd_time, "fixture": cmd_fixture}[args.cmd](args)


if __name__ == "__main__":
    main()
