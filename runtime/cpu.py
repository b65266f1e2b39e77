"""How many CPU threads onnxruntime should use: what this process may really run on.

`os.cpu_count()` counts the machine's logical CPUs. A container or a batch job usually gets
fewer: an affinity mask (taskset, cpusets) or a CPU quota (cgroup v2 `cpu.max`, cgroup v1
`cpu.cfs_quota_us`). More threads than that only queue behind each other, and onnxruntime's
spinning worker threads then slow every inference down. So the default is the smallest of:

- the CPUs in the affinity mask (`os.sched_getaffinity`, where the platform has it);
- the cgroup CPU quota, rounded up (a quota of 1.5 CPUs lets 2 threads make progress);
- the physical cores among those CPUs: two hyper-threads share one core's vector units, and
  convolutions saturate those, so a second thread per core adds little (on machines without
  SMT the physical count equals the logical one and changes nothing).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
SYS_CPU = Path("/sys/devices/system/cpu")


# ----------------------------------------------------------------------------------------------
# Affinity


def affinity_cpus() -> set[int] | None:
    """The CPU numbers this process may run on, or None where the platform cannot say."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    try:
        return set(getaffinity(0))
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# cgroup quotas


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max`: "QUOTA PERIOD" in microseconds, or "max PERIOD" for no limit."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` (-1 for no limit) over `cpu.cfs_period_us`."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _own_cgroups(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup paths: (v2 unified path, v1 path of the `cpu` controller)."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, cgroup_path: str | None) -> list[Path]:
    """base/<cgroup path>, then each parent up to base: a limit anywhere above applies too."""
    rel = Path((cgroup_path or "/").lstrip("/"))
    out = [base / rel]
    out += [base / p for p in rel.parents]
    return list(dict.fromkeys(out))


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota, in CPUs, of this process's cgroup (the tightest along its path), or None."""
    v2_path, v1_path = _own_cgroups(proc_cgroup)
    limits: list[float] = []
    # cgroup v2: one tree, mounted at root (or at root/unified on hybrid systems).
    for base in (root, root / "unified"):
        for folder in _ancestors(base, v2_path):
            text = _read(folder / "cpu.max")
            if text is not None and (limit := parse_cpu_max(text)) is not None:
                limits.append(limit)
    # cgroup v1: the cpu controller's own tree (named cpu, or cpu,cpuacct on some systems).
    for base in (root / "cpu", root / "cpu,cpuacct"):
        for folder in _ancestors(base, v1_path):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota is not None and period is not None and (limit := parse_cfs(quota, period)) is not None:
                limits.append(limit)
    return min(limits) if limits else None


# ----------------------------------------------------------------------------------------------
# Physical cores


def physical_cores(cpus: set[int] | None = None, sys_cpu: Path = SYS_CPU) -> int | None:
    """Distinct physical cores among `cpus` (all when None), from sysfs topology; None if unknown."""
    cores = set()
    folders = sorted(sys_cpu.glob("cpu[0-9]*"))
    for folder in folders:
        number = int(folder.name[3:])
        if cpus is not None and number not in cpus:
            continue
        topo = folder / "topology"
        package = _read(topo / "physical_package_id")
        core = _read(topo / "core_id")
        if package is None or core is None:
            return None
        cores.add((package.strip(), core.strip()))
    return len(cores) or None


# ----------------------------------------------------------------------------------------------
# Vector instructions: what sets the speed of int8 and bf16 arithmetic
#
# The same marketing name hides very different machines: an "AMD EPYC" with AVX-512 VNNI (Zen 4)
# runs the int8 default in about half the time of one with AVX2 only (Zen 3), where int8 needs two
# instructions per multiply-add and bf16 is emulated. So every figure names the tier beside the CPU.

PROC_CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_fields(cpuinfo: Path = PROC_CPUINFO) -> tuple[str | None, set[str]]:
    """The CPU's model name and feature flags as Linux lists them (x86 `flags`, ARM `Features`);
    (None, empty) elsewhere."""
    name, flags = None, set()
    for line in (_read(cpuinfo) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
        elif key.strip() == "model name" and name is None:
            name = value.strip()
    return name, flags


def cpu_flags(cpuinfo: Path = PROC_CPUINFO) -> set[str]:
    return cpuinfo_fields(cpuinfo)[1]


def vector_tier(flags: set[str]) -> str | None:
    """The widest int8/bf16 arithmetic among `flags`, in words, or None when they say nothing."""
    if "amx_tile" in flags:
        return "AMX" + (" bf16/int8" if {"amx_bf16", "amx_int8"} <= flags else "")
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI" + (" + BF16" if "avx512_bf16" in flags else "")
    if "avx512f" in flags:
        return "AVX-512, no VNNI"
    if "avx2" in flags:
        return "AVX2 + AVX-VNNI" if "avx_vnni" in flags else "AVX2, no VNNI or bf16"
    if "asimd" in flags:  # ARM: the dot-product and int8-matmul extensions are what int8 uses
        names = {"asimddp": "dot product", "i8mm": "i8mm", "bf16": "bf16"}
        extras = [name for flag, name in names.items() if flag in flags]
        return "NEON" + (f" + {', '.join(extras)}" if extras else "")
    return None


# ----------------------------------------------------------------------------------------------
# The default


def usable_cpus() -> dict[str, float | int | None]:
    """Each bound that applies here, for `cifar10 info` and the choice below."""
    cpus = affinity_cpus()
    return {
        "logical": os.cpu_count(),
        "affinity": len(cpus) if cpus is not None else None,
        "cgroup_quota": cgroup_cpu_limit(),
        "physical_cores": physical_cores(cpus),
    }


def machine_busy(threads: int) -> bool:
    """Whether the 1-minute load average already fills `threads` CPUs (Unix; False elsewhere).

    onnxruntime's workers spin while they wait for work; on a busy machine the spinning steals the
    cycles the other threads need. Measured on a 2-core Xeon at load average ~15: batch-1 p50
    11 ms with 1 thread, 23-27 ms with 2 spinning threads, 10-13 ms with 2 non-spinning ones."""
    try:
        return os.getloadavg()[0] >= threads
    except (AttributeError, OSError):
        return False


def default_threads() -> int:
    """Threads for onnxruntime's intra-op pool when the user gives none (`--threads`)."""
    bounds = usable_cpus()
    candidates = [bounds["logical"], bounds["affinity"], bounds["physical_cores"]]
    if bounds["cgroup_quota"] is not None:
        candidates.append(math.ceil(bounds["cgroup_quota"]))
    known = [int(c) for c in candidates if c]
    return max(1, min(known)) if known else 1
