"""`python -m cifar10kit.train ARGS` is `cifar10 train ARGS`: the entry point torchrun starts in each process,
as in `torchrun --nproc-per-node 4 -m cifar10kit.train --preset best --data-dir DATA`."""

import sys

from ..main import main

raise SystemExit(main(["train", *sys.argv[1:]]))
