#!/usr/bin/env python3
"""Writes the PyTorch reference that lenet's numbers are tested against (tests/pytorch_reference.rs).

In the style of llm.c's test_gpt2: PyTorch runs the same network on the same weights and the
same batch, and the tensors it computes are dumped to a small file that is committed; the Rust
tests recompute everything with lenet and compare.

How the committed fixture (tests/fixtures/pytorch_reference.safetensors) was made:

    scripts/interop --setup-only                 # .venv with torch==2.15.0 (CPU use), safetensors
    .venv/bin/python scripts/pytorch_reference.py
    .venv/bin/python scripts/pytorch_reference.py --check   # regenerate in memory, compare

on x86_64 Linux, one thread, float32, from the real datasets as scripts/setup-data installs
them. The header of the file repeats the settings (JSON under "lenet.reference"), and the Rust
tests read them from there, so this script is the only place they are written down.

What the fixture holds (all float32 unless said otherwise):

    params.<key>            the starting weights, PyTorch state_dict keys (0.weight ... 11.bias):
                            torch.manual_seed(0), Xavier-uniform weights as d2l, PyTorch's
                            default biases. d2l and relu have the same parameter shapes, and
                            both presets start from these same weights.
    <p>.images   uint8      (16, 28, 28): the first 16 test images of the preset's dataset
                            (d2l: Fashion-MNIST, relu: MNIST), as stored in the IDX file
    <p>.labels   uint8      (16): their labels
    <p>.x                   (16, 1, 28, 28): images / 255, as torchvision's ToTensor
    <p>.logits              (16, 10): the network's output on x
    <p>.loss                (): CrossEntropyLoss (mean) of logits and labels
    <p>.grad.<key>          the gradient of that loss for every parameter
    <p>.sgd_losses          (10): the loss before each of 10 SGD steps on the same batch,
                            momentum and weight decay on (settings in the header)
    <p>.adam_losses         (10): the same with Adam (weight decay on)
    d2l.sgd_step.<key>      d2l's weights after one SGD step (momentum, weight decay)
    d2l.adam_step.<key>     d2l's weights after one Adam step

for the presets <p> = d2l (Sigmoid, AvgPool2d) and relu (ReLU, MaxPool2d). The weights after
one step are stored for d2l only, to keep the file small (each set is 247 kB): the update
rule does not depend on the architecture, and relu's updates are checked through its 10-step
losses of both optimizers. The optimizers run PyTorch's single-tensor path (foreach=False),
the one PyTorch takes for CPU tensors.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pytorch_lenet  # noqa: E402  (the data locations lenet searches, the IDX reader)

FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "pytorch_reference.safetensors")
SEED = 0
BATCH = 16
STEPS = 10
PRESETS = {
    # preset: (activation, pooling, dataset of its batch)
    "d2l": (nn.Sigmoid, nn.AvgPool2d, "fashion-mnist"),
    "relu": (nn.ReLU, nn.MaxPool2d, "mnist"),
}
SGD = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-4}
# Weights after one step are stored for these presets only (see the docstring).
STEP_PRESETS = ["d2l"]


def build(preset):
    """The preset as lenet's spec describes it: the nn.Sequential whose state_dict keys lenet uses."""
    act, pool, _ = PRESETS[preset]
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), act(),
        pool(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), act(),
        pool(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, 10),
    )


def initial_state():
    torch.manual_seed(SEED)
    net = build("d2l")
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_batch(dataset, data_dir):
    """The first BATCH test images (uint8, (B, 28, 28)) and labels (uint8) of a dataset."""
    looked = pytorch_lenet.candidates(dataset, data_dir)
    for folder in looked:
        images, labels = (pytorch_lenet.find_file(folder, n) for n in pytorch_lenet.FILES["test"])
        if images and labels:
            x = pytorch_lenet.read_idx(images)[:BATCH]
            y = pytorch_lenet.read_idx(labels)[:BATCH]
            return torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
    sys.exit(f"{dataset} test set not found; looked in: {', '.join(looked)} (run scripts/setup-data)")


def sgd(params):
    return torch.optim.SGD(params, lr=SGD["lr"], momentum=SGD["momentum"], weight_decay=SGD["weight_decay"],
                           nesterov=SGD["nesterov"], foreach=False)


def adam(params):
    return torch.optim.Adam(params, lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]), eps=ADAM["eps"],
                            weight_decay=ADAM["weight_decay"], foreach=False)


def net_at(preset, state):
    net = build(preset)
    net.load_state_dict(state, strict=True)
    return net


def reference(data_dir):
    """Every tensor of the fixture, by name, and the header."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    state = initial_state()
    out = {f"params.{k}": v for k, v in state.items()}
    for preset, (_, _, dataset) in PRESETS.items():
        images, labels = test_batch(dataset, data_dir)
        x = images.to(torch.float32).div(255).reshape(BATCH, 1, 28, 28)
        y = labels.to(torch.int64)
        out[f"{preset}.images"] = images
        out[f"{preset}.labels"] = labels
        out[f"{preset}.x"] = x

        # Forward, loss, backward from the starting weights.
        net = net_at(preset, state)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        out[f"{preset}.logits"] = logits.detach()
        out[f"{preset}.loss"] = loss.detach()
        for k, p in net.named_parameters():
            out[f"{preset}.grad.{k}"] = p.grad.detach().clone()

        for name, make in (("sgd", sgd), ("adam", adam)):
            net = net_at(preset, state)
            opt = make(net.parameters())
            losses = []
            for step in range(STEPS):
                opt.zero_grad()
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.detach().clone())
                if step == 0 and preset in STEP_PRESETS:
                    for k, p in net.named_parameters():
                        out[f"{preset}.{name}_step.{k}"] = p.detach().clone()
            out[f"{preset}.{name}_losses"] = torch.stack(losses)

    header = {
        "made_by": "scripts/pytorch_reference.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": 1,
        "seed": SEED,
        "batch": BATCH,
        "steps": STEPS,
        "init": "torch.manual_seed(seed); xavier_uniform_ on every Conv2d/Linear weight; default biases",
        "presets": {p: {"dataset": d, "split": "test", "first": BATCH} for p, (_, _, d) in PRESETS.items()},
        "step_presets": STEP_PRESETS,
        "sgd": SGD,
        "adam": ADAM,
    }
    return {k: v.contiguous() for k, v in out.items()}, header


# How far a recomputed tensor may be from the committed one, relative to its largest value.
# PyTorch's float32 CPU kernels are chosen by instruction set (AVX2, AVX-512, ...), so the
# same script on another CPU differs in the last bits: about 1e-6 for gradients. One Adam
# step divides each gradient by its own magnitude, which turns those bits into up to ~6e-5
# of the weights for near-zero gradients (measured on an AVX-512 EPYC). A stale fixture
# (another formula, another seed, another batch) differs by orders of magnitude more.
TOLERANCE = 1e-5
STEP_TOLERANCE = 1e-4


def compare(new, path):
    """Compares freshly computed tensors with a fixture file; returns the problems found."""
    from safetensors.torch import load_file

    old = load_file(path)
    problems = []
    for k in sorted(set(old) | set(new)):
        if k not in old or k not in new:
            problems.append(f"{k}: only in {'the file' if k in old else 'the new run'}")
            continue
        a, b = old[k], new[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{k}: {tuple(a.shape)} {a.dtype} in the file, {tuple(b.shape)} {b.dtype} now")
            continue
        if a.dtype == torch.uint8:
            if not torch.equal(a, b):
                problems.append(f"{k}: differs")
            continue
        scale = b.abs().max().item() or 1.0
        err = (a - b).abs().max().item() / scale
        tol = STEP_TOLERANCE if "_step." in k else TOLERANCE
        if err > tol:
            problems.append(f"{k}: max error {err:.2e} of the largest value (at most {tol:.0e})")
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="folder holding the IDX files (or a <dataset> subfolder)")
    p.add_argument("--out", default=FIXTURE, help="where to write the fixture (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="recompute and compare with the existing file (within TOLERANCE) instead of writing it")
    args = p.parse_args()

    tensors, header = reference(args.data_dir)
    if args.check:
        problems = compare(tensors, args.out)
        for problem in problems:
            print(f"{args.out}: {problem}", file=sys.stderr)
        if problems:
            sys.exit(f"{args.out} does not match what {header['made_by']} computes now")
        print(f"{args.out}: all {len(tensors)} tensors reproduced (torch {torch.__version__})")
        return

    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    save_file(tensors, tmp, metadata={"lenet.reference": json.dumps(header, sort_keys=True)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(tensors)} tensors, {size / 1e6:.2f} MB (torch {torch.__version__})")
    for preset in PRESETS:
        print(f"  {preset}: loss {tensors[preset + '.loss'].item():.6f}, "
              f"sgd losses {tensors[preset + '.sgd_losses'][0].item():.4f} -> {tensors[preset + '.sgd_losses'][-1].item():.4f}, "
              f"adam losses {tensors[preset + '.adam_losses'][0].item():.4f} -> {tensors[preset + '.adam_losses'][-1].item():.4f}")


if __name__ == "__main__":
    main()
