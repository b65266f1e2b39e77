"""The `cifar10` command line (placeholder while the rest lands)."""
import argparse
import sys


def main(argv=None) -> int:
    from .train.trainer import make_config, train
    p = argparse.ArgumentParser("cifar10")
    p.add_argument("cmd")
    p.add_argument("--preset", default="fast")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--subset", type=int)
    p.add_argument("--name")
    p.add_argument("--resume")
    a = p.parse_args(argv)
    cfg = make_config(a.preset, data_dir=a.data_dir, epochs=a.epochs, subset=a.subset, name=a.name)
    train(cfg, a.resume)
    return 0
