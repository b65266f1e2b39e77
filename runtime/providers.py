"""Why CUDA did not start: facts a user can act on, gathered without running anything on a GPU.

When onnxruntime cannot start its CUDA provider it logs a loader error and quietly runs on the
CPU. We name the cause in one line instead:

- which onnxruntime distribution and version is installed, and the CUDA and cuDNN majors it was
  built for (the package's `build_and_package_info`; cuDNN follows from the CUDA major);
- which library failed to load: we ask the dynamic loader for the CUDA provider library itself
  (after onnxruntime's own `preload_dlls`), which fails with exactly the missing dependency;
- whether `onnxruntime` and `onnxruntime-gpu` are both installed: they share one import name, so
  whichever was installed last wins, often the CPU-only one.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
DUPLICATE_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
ASSUME_DRIVER_ENV = "CIFAR10_ASSUME_NVIDIA_DRIVER"  # "1": skip the driver probe, let onnxruntime try

# What each library is, so the note can say what to install.
_LIBRARY_ROLES = (
    ("libcuda.", "the NVIDIA driver"),
    ("nvcuda", "the NVIDIA driver"),
    ("cudart", "the CUDA runtime"),
    ("cudnn", "cuDNN"),
    ("cublas", "cuBLAS (CUDA toolkit)"),
    ("cufft", "cuFFT (CUDA toolkit)"),
    ("curand", "cuRAND (CUDA toolkit)"),
    ("nvrtc", "NVRTC (CUDA toolkit)"),
)
_MISSING = re.compile(r"([\w.+-]+\.(?:so(?:\.\d+)*|dll|dylib))\b[^\n]*?(?:cannot open|not found|No such file)")


# ----------------------------------------------------------------------------------------------
# The driver probe


def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver library loads. Without it, asking onnxruntime for CUDA only
    produces loader errors, so machines with no GPU never try (and print nothing).

    `CIFAR10_ASSUME_NVIDIA_DRIVER=1` skips the probe: onnxruntime then really tries CUDA and the
    note says what failed (useful where the driver lives somewhere the probe does not look)."""
    if os.environ.get(ASSUME_DRIVER_ENV, "") not in ("", "0"):
        return True
    names = ["nvcuda.dll"] if os.name == "nt" else ["libcuda.so.1", "libcuda.so", "libcuda.dylib"]
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


# ----------------------------------------------------------------------------------------------
# What the installed onnxruntime was built for


@dataclass
class OrtBuild:
    distribution: str  # "onnxruntime-gpu", "onnxruntime", ...
    version: str
    cuda_major: str | None  # e.g. "13"
    cudnn_major: str | None  # e.g. "9"

    def describe(self) -> str:
        """'onnxruntime-gpu 1.31.1 (CUDA 13, cuDNN 9)'."""
        built = [
            f"CUDA {self.cuda_major}" if self.cuda_major else "",
            f"cuDNN {self.cudnn_major}" if self.cudnn_major else "",
        ]
        built = ", ".join(b for b in built if b)
        return f"{self.distribution} {self.version}" + (f" ({built})" if built else "")


def cuda_provider_library(ort) -> Path | None:
    capi = Path(ort.__file__).parent / "capi"
    for name in ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll"):
        if (capi / name).exists():
            return capi / name
    return None


# onnxruntime-gpu's install notes: builds for CUDA 12.x and 13.x need cuDNN 9, CUDA 11.8 builds cuDNN 8.
# (cuDNN is opened at run time, not linked, so the provider library itself does not name it.)
_CUDNN_FOR_CUDA = {"11": "8", "12": "9", "13": "9"}


def ort_build(ort) -> OrtBuild:
    """The installed onnxruntime's distribution, version and the CUDA/cuDNN majors it expects."""
    try:
        from onnxruntime.capi import build_and_package_info as info

        distribution, cuda = info.package_name, getattr(info, "cuda_version", "") or ""
    except ImportError:
        distribution, cuda = "onnxruntime", ""
    cuda_major = cuda.split(".")[0] or None
    return OrtBuild(distribution, ort.__version__, cuda_major, _CUDNN_FOR_CUDA.get(cuda_major or ""))


# ----------------------------------------------------------------------------------------------
# Which library failed


def missing_library(ort) -> str | None:
    """Load the CUDA provider library the way onnxruntime does; the loader names what is missing.

    The provider links the CUDA runtime and the driver, so the loader's error names the first of
    those it cannot find. cuDNN is opened later, by name, so it is tried on its own afterwards.
    Returns a one-line loader error (e.g. "libcudnn.so.9: cannot open shared object file"), or
    None when everything loads (then the cause is elsewhere: no device, a driver too old)."""
    library = cuda_provider_library(ort)
    if library is None:
        return "the CUDA provider library is not part of this onnxruntime"
    try:
        ctypes.CDLL(str(library))
    except OSError as e:
        return str(e).replace(str(library) + ": ", "").strip()
    build = ort_build(ort)
    if build.cudnn_major:
        name = f"cudnn64_{build.cudnn_major}.dll" if os.name == "nt" else f"libcudnn.so.{build.cudnn_major}"
        try:
            ctypes.CDLL(name)
        except OSError as e:
            return str(e).strip() if name in str(e) else f"{name}: cannot open shared object file ({e})"
    return None


def library_role(text: str) -> str:
    """'the NVIDIA driver', 'cuDNN', ... for a library name or loader message; '' if unknown."""
    lowered = text.lower()
    for stem, role in _LIBRARY_ROLES:
        if stem in lowered:
            return role
    return ""


def _first_library(text: str) -> str | None:
    m = _MISSING.search(text)
    return m.group(1) if m else None


def cuda_failure_reason(ort, error: str = "") -> str:
    """One line: what onnxruntime was built for, what failed to load, and what to do about it.

    error: onnxruntime's own exception text, when it raised one."""
    build = ort_build(ort)
    loader = missing_library(ort)
    library = _first_library(error) or (_first_library(loader) if loader else None)
    if library:
        role = library_role(library)
        what = f"{library}{f' ({role})' if role else ''} could not be loaded"
        hint = _install_hint(role, build)
    elif loader:
        what, hint = loader, ""
    elif error:
        what, hint = error.splitlines()[0][:200], ""
    else:
        what = "the CUDA provider loaded but no CUDA device could be used"
        hint = "check `nvidia-smi` and that the driver supports this CUDA version"
    return f"{build.describe()}: {what}" + (f"; {hint}" if hint else "")


def _install_hint(role: str, build: OrtBuild) -> str:
    if role == "the NVIDIA driver":
        return "install the NVIDIA driver (check with `nvidia-smi`)"
    if role:
        cuda = f"CUDA {build.cuda_major}" if build.cuda_major else "CUDA"
        cudnn = f"cuDNN {build.cudnn_major}" if build.cudnn_major else "cuDNN"
        return f"install {cuda} and {cudnn}, e.g. pip install '{build.distribution}[cuda,cudnn]'"
    return ""


# ----------------------------------------------------------------------------------------------
# Two onnxruntime packages in one environment


def installed_ort_distributions() -> dict[str, str]:
    """{distribution name: version} of the onnxruntime packages installed in this environment."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def duplicate_ort_warning(installed: dict[str, str] | None = None) -> str | None:
    """A warning with the fix when both the CPU and the GPU package are installed, else None."""
    installed = installed_ort_distributions() if installed is None else installed
    if not all(name in installed for name in ORT_DISTRIBUTIONS):
        return None
    versions = ", ".join(f"{n} {v}" for n, v in sorted(installed.items()))
    return (
        f"warning: both onnxruntime packages are installed ({versions}); they share one import name, so "
        f"CUDA may be missing. Fix: {DUPLICATE_FIX}"
    )
