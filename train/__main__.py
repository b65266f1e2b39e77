"""`python -m cifar10kit.train ARGS` is `cifar10 train ARGS`: the entry point torchrun starts in each process,
as in `torchrun --nproc-per-node 4 -m cifar10kit.train --preset best --data-dir DATA`."""

import sys

from ..main import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
