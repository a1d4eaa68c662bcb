#!/usr/bin/env python3
"""PyTorch's side of `lenet bench`: the same LeNet, data, batch and thread count, measured the same way.

Train: repeats of one epoch (or --train-batches steps) of d2l's training step on the whole
training set held in memory as a float32 tensor: zero_grad, forward, cross-entropy, backward,
SGD step, and the loss/accuracy bookkeeping d2l's train_ch6 does after every step. The
batches are gathered (shuffled indexing) before the timer starts, so PyTorch is not charged
for them (lenet's timer does include its batch gathering). Eval: repeats of forward + argmax
over the test set under torch.inference_mode(). Each phase has --warmup unmeasured repeats
first; the median, min, max and spread (max - min) / median are over the measured ones, as
`lenet bench` reports them.

With --device cuda the data, the model and the batches live on the GPU, and the
bookkeeping stays there too (summed in tensors, read once at the end, as lenet's GPU engine
reads its sums only at curve points): the timer stops after torch.cuda.synchronize().
--compile runs the model through torch.compile (its compilation happens in the warm-up).

Peak RSS is the process's high-water mark (ru_maxrss) after training and evaluation, before
the sgemm measurement. The sgemm peak is the best of a few torch.mm products of two
--sgemm-size square float32 matrices on --threads threads (PyTorch's BLAS, e.g. MKL).

    scripts/pytorch_bench.py --arch d2l --batch 256 --threads 2 --json
    scripts/pytorch_bench.py --arch d2l --batch 256 --device cuda --compile --json
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from pytorch_lenet import init_weights, lenet, load  # noqa: E402


def summary(samples):
    med = statistics.median(samples)
    return {"median": med, "min": min(samples), "max": max(samples), "samples": samples,
            "spread": (max(samples) - min(samples)) / med if med > 0 else 0.0}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def shuffled_batches(train_x, train_y, batch, max_batches):
    """One epoch's batches in a fresh random order (at most max_batches of them, when
    given), gathered where the data is, before any timer starts."""
    n = len(train_x)
    order = torch.randperm(n, device=train_x.device)
    batches = [(train_x[i], train_y[i]) for i in (order[s : s + batch] for s in range(0, n, batch))]
    return batches[:max_batches] if max_batches else batches


def train_repeat(net, optimizer, loss, train_x, train_y, batch, max_batches):
    """One timed pass; returns (examples/sec, first loss, last loss)."""
    if train_x.device.type == "cuda":
        return train_repeat_on_gpu(net, optimizer, loss, train_x, train_y, batch, max_batches)
    batches = shuffled_batches(train_x, train_y, batch, max_batches)
    net.train()
    first = last = float("nan")
    loss_sum, correct, seen = 0.0, 0.0, 0
    start = time.perf_counter()
    for X, y in batches:
        optimizer.zero_grad()
        y_hat = net(X)
        l = loss(y_hat, y)
        l.backward()
        optimizer.step()
        with torch.no_grad():
            last = float(l)
            loss_sum += last * X.shape[0]
            correct += float((y_hat.argmax(dim=1) == y).sum())
            seen += X.shape[0]
        if first != first:
            first = last
    secs = time.perf_counter() - start
    return seen / secs, first, last, seen


def train_repeat_on_gpu(net, optimizer, loss, train_x, train_y, batch, max_batches):
    """train_repeat with the bookkeeping kept on the GPU: nothing waits for the host but
    the first step's loss (read once, as lenet reads its first) and the end."""
    device = train_x.device
    batches = shuffled_batches(train_x, train_y, batch, max_batches)
    net.train()
    sync(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    first, seen = float("nan"), 0
    start = time.perf_counter()
    for X, y in batches:
        optimizer.zero_grad()
        y_hat = net(X)
        l = loss(y_hat, y)
        l.backward()
        optimizer.step()
        with torch.no_grad():
            loss_sum += l.detach() * X.shape[0]
            correct += (y_hat.argmax(dim=1) == y).sum()
        if first != first:
            first = float(l)
        seen += X.shape[0]
    last = float(l)
    sync(device)
    secs = time.perf_counter() - start
    return seen / secs, first, last, seen


def eval_repeat(net, test_x, test_y, batch, max_batches):
    net.eval()
    starts = list(range(0, len(test_x), batch))
    if max_batches:
        starts = starts[:max_batches]
    correct, seen = 0, 0
    on_gpu = test_x.device.type == "cuda"
    sync(test_x.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in starts:
            X, y = test_x[i : i + batch], test_y[i : i + batch]
            hits = (net(X).argmax(dim=1) == y).sum()
            # On the GPU the count stays there until the end; on the CPU, as d2l counts.
            correct += hits if on_gpu else int(hits)
            seen += X.shape[0]
    correct = int(correct)
    sync(test_x.device)
    secs = time.perf_counter() - start
    return seen / secs, seen


def sgemm_gflops(size, reps=3):
    a = torch.rand(size, size) - 0.5
    b = torch.rand(size, size) - 0.5
    best = float("inf")
    for _ in range(reps + 1):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["d2l", "relu"], default="d2l")
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="mnist")
    p.add_argument("--data-dir", help="folder holding the IDX files (or a <dataset> subfolder)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.9)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-batches", type=int, default=0, help="training steps per repeat (0: one epoch)")
    p.add_argument("--eval-batches", type=int, default=0, help="evaluation batches per repeat (0: the test set)")
    p.add_argument("--sgemm-size", type=int, default=1536, help="0: skip the sgemm measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args()
    if args.batch < 1 or args.threads < 1 or args.repeats < 1:
        sys.exit("--batch, --threads and --repeats must be at least 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train_x, train_y, test_x, test_y = (t.to(device) for t in load(args.dataset, args.data_dir))
    net = lenet(args.arch)
    net.apply(init_weights)
    net.to(device)
    if args.compile:
        net = torch.compile(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss = nn.CrossEntropyLoss()

    train, losses, train_examples = [], [], 0
    for r in range(args.warmup + args.repeats):
        eps, first, last, train_examples = train_repeat(net, optimizer, loss, train_x, train_y, args.batch,
                                                        args.train_batches)
        losses += [first, last]
        if r >= args.warmup:
            train.append(eps)
        if not args.json:
            which = "warm-up" if r < args.warmup else f"repeat {r - args.warmup + 1}"
            print(f"  train {which:<9} {eps:>9.0f} examples/sec", flush=True)
    evals, eval_examples = [], 0
    for r in range(args.warmup + args.repeats):
        eps, eval_examples = eval_repeat(net, test_x, test_y, args.batch, args.eval_batches)
        if r >= args.warmup:
            evals.append(eps)
        if not args.json:
            which = "warm-up" if r < args.warmup else f"repeat {r - args.warmup + 1}"
            print(f"  eval  {which:<9} {eps:>9.0f} examples/sec", flush=True)
    # Linux reports ru_maxrss in KiB.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sgemm = sgemm_gflops(args.sgemm_size) if args.sgemm_size > 0 and args.device == "cpu" else None

    out = {
        "torch": torch.__version__, "device": args.device, "compile": args.compile,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "arch": args.arch, "dataset": args.dataset, "batch": args.batch,
        "threads": args.threads, "lr": args.lr, "warmup": args.warmup, "repeats": args.repeats,
        "train": summary(train), "eval": summary(evals),
        "train_examples_per_repeat": train_examples, "eval_examples_per_repeat": eval_examples,
        "first_loss": losses[0], "last_loss": losses[-1],
        "peak_rss_mib": peak_rss_mib, "sgemm_gflops": sgemm, "sgemm_size": args.sgemm_size,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for phase in ("train", "eval"):
            s = out[phase]
            print(f"  {phase:<5} median {s['median']:.0f}  min {s['min']:.0f}  max {s['max']:.0f}  "
                  f"spread {100 * s['spread']:.1f}%")
        print(f"  peak RSS {peak_rss_mib:.0f} MiB" + (f", sgemm {sgemm:.0f} GFLOP/s" if sgemm else ""))


if __name__ == "__main__":
    main()
