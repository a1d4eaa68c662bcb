#!/usr/bin/env python3
"""d2l's LeNet in PyTorch (CPU), the peer that lenet's accuracy and speed are measured against.

The network, initialisation, optimizer and loop are those of d2l's chapter "Convolutional
Neural Networks (LeNet)" (train_ch6): Xavier-uniform weights on every Conv2d/Linear, SGD,
CrossEntropyLoss, shuffled batches, and a Timer that measures only the training steps
(zero_grad, forward, loss, backward, step and the metric update), not the data loading.
The data are the same IDX files lenet reads, parsed here with numpy (images / 255, float32).

    scripts/pytorch_lenet.py                                 # d2l: Fashion-MNIST, lr 0.9, batch 256, 10 epochs
    scripts/pytorch_lenet.py --epochs 1 --max-batches 100 --json   # throughput on part of an epoch
    scripts/pytorch_lenet.py --arch relu --dataset mnist     # ReLU + MaxPool2d

Output lines follow lenet's format:
    epoch 1/10  loss 2.318  train acc 0.104  test acc 0.126  3413 examples/sec
    loss 0.469, train acc 0.823, test acc 0.779
    20900.0 examples/sec on cpu (2 threads)
With --json a last line holds a JSON summary (train examples/sec, test acc, peak RSS, ...).
"""

import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path):
    """An IDX file (gzip'd or raw) as a numpy array of its declared shape (uint8 data only)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def candidates(dataset, data_dir):
    """The folders lenet searches, in lenet's order (src/data/locate.rs)."""
    out = []
    for root in (data_dir, os.environ.get("LENET_DATA")):
        if root:
            out += [os.path.join(root, dataset), root]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out.append(os.path.join(cache, "lenet", dataset))
    if dataset == "fashion-mnist":
        out.append(DEBIAN_FASHION_DIR)
    return out


def find_file(folder, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def load(dataset, data_dir):
    """(train_x, train_y, test_x, test_y): images (N, 1, 28, 28) float32 in [0, 1], labels int64."""
    looked = candidates(dataset, data_dir)
    for folder in looked:
        paths = {split: [find_file(folder, n) for n in names] for split, names in FILES.items()}
        if all(p for ps in paths.values() for p in ps):
            out = []
            for split in ("train", "test"):
                images, labels = (read_idx(p) for p in paths[split])
                x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
                y = torch.from_numpy(labels.astype(np.int64))
                out += [x, y]
            return tuple(out)
    sys.exit(f"{dataset} not found; looked in: {', '.join(looked)}")


def lenet(arch):
    act, pool = (nn.Sigmoid, nn.AvgPool2d) if arch == "d2l" else (nn.ReLU, nn.MaxPool2d)
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


def init_weights(m):
    # d2l: Xavier-uniform weights, PyTorch's default biases.
    if type(m) == nn.Linear or type(m) == nn.Conv2d:
        nn.init.xavier_uniform_(m.weight)


def evaluate_accuracy(net, x, y, batch):
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (net(x[i : i + batch]).argmax(dim=1) == y[i : i + batch]).sum().item()
    net.train()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=["d2l", "relu"], default="d2l")
    p.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist")
    p.add_argument("--data-dir", help="folder holding the IDX files (or a <dataset> subfolder)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batches", type=int, default=0,
                   help="train only this many batches per epoch (throughput on part of an epoch)")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y, test_x, test_y = load(args.dataset, args.data_dir)

    net = lenet(args.arch)
    net.apply(init_weights)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss = nn.CrossEntropyLoss()
    device = f"cpu ({args.threads} thread{'' if args.threads == 1 else 's'})"
    print(f"training on {device}  [torch {torch.__version__}]", flush=True)

    n = len(train_x)
    train_secs_total, examples_total = 0.0, 0
    train_l = train_acc = test_acc = float("nan")
    epochs = []
    for epoch in range(1, args.epochs + 1):
        net.train()
        # As d2l's DataLoader(shuffle=True): a new order each epoch, batches gathered
        # outside the timer.
        order = torch.randperm(n)
        batches = [order[i : i + args.batch] for i in range(0, n, args.batch)]
        if args.max_batches:
            batches = batches[: args.max_batches]
        loss_sum, correct, seen, train_secs = 0.0, 0.0, 0, 0.0
        epoch_start = time.perf_counter()
        for idx in batches:
            X, y = train_x[idx], train_y[idx]
            t = time.perf_counter()
            optimizer.zero_grad()
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += float(l * X.shape[0])
                correct += float((y_hat.argmax(dim=1) == y).sum())
                seen += X.shape[0]
            train_secs += time.perf_counter() - t
        epoch_secs = time.perf_counter() - epoch_start
        train_l, train_acc = loss_sum / seen, correct / seen
        if not args.no_eval:
            test_acc = evaluate_accuracy(net, test_x, test_y, args.batch)
        eps = seen / train_secs
        train_secs_total += train_secs
        examples_total += seen
        epochs.append({"epoch": epoch, "train_loss": train_l, "train_acc": train_acc, "test_acc": test_acc,
                       "examples": seen, "train_seconds": train_secs, "epoch_seconds": epoch_secs,
                       "examples_per_sec": eps})
        print(f"epoch {epoch}/{args.epochs}  loss {train_l:.3f}  train acc {train_acc:.3f}  "
              f"test acc {test_acc:.3f}  {eps:.0f} examples/sec", flush=True)

    eps_total = examples_total / train_secs_total
    print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
    print(f"{eps_total:.1f} examples/sec on {device}", flush=True)
    if args.json:
        summary = {
            "torch": torch.__version__,
            "arch": args.arch,
            "dataset": args.dataset,
            "batch": args.batch,
            "lr": args.lr,
            "threads": args.threads,
            "epochs": args.epochs,
            "max_batches": args.max_batches,
            "train_examples_per_sec": eps_total,
            "train_loss": train_l,
            "train_acc": train_acc,
            "test_acc": test_acc,
            # Linux reports ru_maxrss in KiB.
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "per_epoch": epochs,
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
