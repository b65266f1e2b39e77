"""cifar10kit: train a CIFAR-10 classifier, export it to one ONNX file, run it anywhere."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cifar10kit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
