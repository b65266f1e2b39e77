"""`python -m cifar10kit.gui [IMAGE] [--model M] [--provider P] [--data-dir D]`."""

import sys

from .app import _cli

sys.exit(_cli())
