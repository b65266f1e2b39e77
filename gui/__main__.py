"""`python -m cifar10kit.gui [IMAGE] [--model M] [--provider P] [--data-dir D] [--threads N]`: the same
options as `cifar10 gui`, parsed by the one command-line parser."""

import sys

from ..main import main

sys.exit(main(["gui", *sys.argv[1:]]))
