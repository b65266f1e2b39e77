"""Sessions fitted to the machine: typed model metadata, the CUDA fallback and its diagnosis, CPU
threads from affinity and cgroup quotas, data folders, the CSV dialect, the image-file rule."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

from cifar10kit.runtime import contract, cpu, locations, providers, results_csv
from cifar10kit.runtime.contract import ContractError, ModelInfo
from cifar10kit.runtime.predict import Result
from cifar10kit.runtime.preprocess import IMAGE_SUFFIXES, is_image_file
from cifar10kit.runtime.session import DEFAULT_MODEL, Classifier, ProviderError

from conftest import cli

# ----------------------------------------------------------------------------------------------
# Typed metadata


def _meta(**extra: str) -> dict[str, str]:
    base = {
        contract.KEY_CONTRACT: contract.CONTRACT_VERSION,
        contract.KEY_CLASS_NAMES: json.dumps(["cat", "dog"]),
        contract.KEY_INPUT_LAYOUT: contract.INPUT_LAYOUT,
        contract.KEY_ARCHITECTURE: "airnet-16-32-32",
        contract.KEY_DATASET: "pets",
        contract.KEY_TEST_ACCURACY: "0.75",
        contract.KEY_VERSION: "9.9",
        contract.KEY_CREATED: "2026-01-01T00:00:00Z",
    }
    return {**base, **extra}


def test_every_metadata_key_has_a_typed_field():
    keys_to_fields = {
        contract.KEY_CLASS_NAMES: "class_names",
        contract.KEY_INPUT_LAYOUT: "input_layout",
        contract.KEY_ARCHITECTURE: "architecture",
        contract.KEY_DATASET: "dataset",
        contract.KEY_TEST_ACCURACY: "test_accuracy",
        contract.KEY_VERSION: "version",
        contract.KEY_CREATED: "created",
        contract.KEY_CONTRACT: "contract_version",
        contract.KEY_THRESHOLD: "uncertainty_threshold",
        contract.KEY_GFLOP_PER_IMAGE: "gflop_per_image",
    }
    fields = {f.name for f in __import__("dataclasses").fields(ModelInfo)}
    for key in contract.REQUIRED_KEYS + contract.OPTIONAL_KEYS:
        assert keys_to_fields.get(key, key) in fields, key
    info = ModelInfo.from_metadata(
        _meta(
            **{
                contract.KEY_RECIPE: json.dumps({"preset": "fast", "epochs": 3}),
                contract.KEY_SEED: "7",
                contract.KEY_TTA: "flip",
                contract.KEY_THRESHOLD: "0.4",
                contract.KEY_PRECISION: "int8",
                contract.KEY_GFLOP_PER_IMAGE: "0.35",
                contract.KEY_TEMPERATURE: "0.5",
                contract.KEY_TEST_SET: "pets test",
                contract.KEY_CHECKPOINT_SHA256: "ab" * 32,
                contract.KEY_EXPORTER: "cifar10kit 9.9",
            }
        )
    )
    assert info.class_names == ("cat", "dog") and info.test_accuracy == 0.75
    assert info.recipe == {"preset": "fast", "epochs": 3} and info.seed == 7 and info.tta == "flip"
    assert info.uncertainty_threshold == info.threshold == 0.4 and info.precision == "int8"
    assert info.gflop_per_image == 0.35 and info.temperature == 0.5 and info.test_set == "pets test"
    bare = ModelInfo.from_metadata(_meta())
    assert (bare.recipe, bare.seed, bare.tta, bare.precision, bare.temperature) == ({}, None, "none", "fp32", None)


@pytest.mark.parametrize(
    "key,value",
    [
        (contract.KEY_TEMPERATURE, "warm"),
        (contract.KEY_SEED, "1.5"),
        (contract.KEY_RECIPE, "[1, 2]"),
        (contract.KEY_RECIPE, "{not json"),
        (contract.KEY_GFLOP_PER_IMAGE, "lots"),
        (contract.KEY_CLASS_NAMES, "[]"),
    ],
)
def test_malformed_metadata_names_the_file_and_key(key, value):
    with pytest.raises(ContractError, match=rf"model.onnx: {key}"):
        ModelInfo.from_metadata(_meta(**{key: value}), "model.onnx")


def test_the_shipped_model_reads_typed():
    info = Classifier(DEFAULT_MODEL, provider="cpu").info
    raw = info.raw
    assert info.temperature == float(raw[contract.KEY_TEMPERATURE]) and info.seed == int(raw[contract.KEY_SEED])
    assert info.recipe == json.loads(raw[contract.KEY_RECIPE]) and info.precision == raw[contract.KEY_PRECISION]
    assert info.gflop_per_image == float(raw[contract.KEY_GFLOP_PER_IMAGE]) > 0


# ----------------------------------------------------------------------------------------------
# The CUDA fallback, for real: onnxruntime-gpu tries CUDA on a machine without the driver


def _cuda_fails_here() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers() and not providers.cuda_driver_present()


needs_failing_cuda = pytest.mark.skipif(
    not _cuda_fails_here(), reason="needs onnxruntime-gpu on a machine without a usable NVIDIA driver"
)


def _expected_build() -> tuple[str, str, str]:
    """What the note must say: distribution, version, CUDA major, read from the installed package."""
    from onnxruntime.capi import build_and_package_info as info

    return info.package_name, ort.__version__, info.cuda_version.split(".")[0]


@needs_failing_cuda
def test_auto_really_tries_cuda_and_names_the_missing_library():
    notes: list[str] = []
    model = Classifier(DEFAULT_MODEL, provider="auto", notify=notes.append, driver_probe=lambda: True)
    assert model.provider == "CPUExecutionProvider"
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert len(notes) == 1 and "\n" not in notes[0] and notes[0].startswith("note: CUDA not used")
    name, version, cuda_major = _expected_build()
    note = notes[0]
    assert f"{name} {version}" in note and f"CUDA {cuda_major}" in note and "cuDNN" in note
    # The library the loader could not find, as the loader itself reports it.
    missing = providers.missing_library(ort)
    assert missing and missing.split(":")[0] in note and ".so" in missing.split(":")[0]
    assert model.run(np.zeros((2, 32, 32, 3), np.uint8)).probs.shape == (2, 10)


@needs_failing_cuda
def test_cuda_is_strict_and_the_cli_says_so_in_one_line():
    with pytest.raises(ProviderError, match="--provider cuda: CUDA is not usable"):
        Classifier(DEFAULT_MODEL, provider="cuda", driver_probe=lambda: True)
    env = {providers.ASSUME_DRIVER_ENV: "1"}
    info = cli("info", "--json", env=env)
    assert info.returncode == 0, info.stderr
    out = json.loads(info.stdout)
    assert out["provider"] == "CPUExecutionProvider" and out["requested_provider"] == "auto"
    missing = providers.missing_library(ort).split(":")[0]
    assert missing in out["provider_note"]
    assert [line for line in info.stderr.splitlines() if line.strip()] == [
        f"note: CUDA not used, running on the CPU: {out['provider_note']}"
    ]
    strict = cli("info", "--provider", "cuda", env=env)
    assert strict.returncode == 1 and strict.stdout == ""
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --provider cuda") and missing in lines[0]


def test_a_machine_without_a_driver_falls_back_silently():
    notes: list[str] = []
    model = Classifier(DEFAULT_MODEL, provider="auto", notify=notes.append, driver_probe=lambda: False)
    assert model.provider == "CPUExecutionProvider" and notes == []
    assert model.fallback_reason and "driver" in model.fallback_reason
    with pytest.raises(ProviderError, match="no NVIDIA driver"):
        Classifier(DEFAULT_MODEL, provider="cuda", driver_probe=lambda: False)


def test_two_onnxruntime_packages_are_reported_with_the_fix():
    both = providers.duplicate_ort_warning({"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.31.1"})
    assert both and "onnxruntime 1.20.0" in both and providers.DUPLICATE_FIX in both
    assert providers.duplicate_ort_warning({"onnxruntime-gpu": "1.31.1"}) is None
    installed = providers.installed_ort_distributions()
    assert installed and all(v for v in installed.values())  # this environment has one of them
    assert (providers.duplicate_ort_warning() is None) == (len(installed) < 2)


def test_library_roles_and_reasons():
    assert providers.library_role("libcuda.so.1") == "the NVIDIA driver"
    assert providers.library_role("libcudnn.so.9: cannot open shared object file") == "cuDNN"
    assert providers.library_role("libcudart.so.13") == "the CUDA runtime"
    reason = providers.cuda_failure_reason(ort, "Failed to load library: libcudnn.so.9: cannot open shared object file")
    assert "libcudnn.so.9 (cuDNN) could not be loaded" in reason and "install CUDA" in reason


# ----------------------------------------------------------------------------------------------
# CPU threads: affinity, cgroup v2 and v1 quotas, physical cores


def test_cpu_quota_parsing():
    assert cpu.parse_cpu_max("150000 100000\n") == 1.5
    assert cpu.parse_cpu_max("max 100000\n") is None
    assert cpu.parse_cpu_max("50000") == 0.5  # the period defaults to 100 ms
    assert cpu.parse_cpu_max("") is None and cpu.parse_cpu_max("garbage here") is None
    assert cpu.parse_cfs("200000\n", "100000\n") == 2.0
    assert cpu.parse_cfs("-1\n", "100000\n") is None


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_is_the_tightest_on_the_path(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(proc, "0::/user.slice/job\n")
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "user.slice" / "cpu.max", "300000 100000\n")
    _write(root / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    assert cpu.cgroup_cpu_limit(root, proc) == 1.5
    _write(root / "user.slice" / "cpu.max", "100000 100000\n")  # a parent's limit applies too
    assert cpu.cgroup_cpu_limit(root, proc) == 1.0


def test_cgroup_v1_and_hybrid_layouts(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(proc, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    _write(root / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "250000\n")
    _write(root / "cpu" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    _write(root / "unified" / "cpu.max", "max 100000\n")
    assert cpu.cgroup_cpu_limit(root, proc) == 2.5
    _write(root / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert cpu.cgroup_cpu_limit(root, proc) is None
    assert cpu.cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "none") is None


def test_physical_cores_from_sysfs(tmp_path):
    # 4 logical CPUs: two cores with two hyper-threads each.
    for n, core in enumerate([0, 1, 0, 1]):
        _write(tmp_path / f"cpu{n}" / "topology" / "core_id", f"{core}\n")
        _write(tmp_path / f"cpu{n}" / "topology" / "physical_package_id", "0\n")
    _write(tmp_path / "cpufreq" / "x", "")  # not a CPU folder
    assert cpu.physical_cores(None, tmp_path) == 2
    assert cpu.physical_cores({0, 2}, tmp_path) == 1  # allowed only on one core's two threads
    assert cpu.physical_cores({0, 1}, tmp_path) == 2


def test_default_threads_never_exceed_what_the_process_may_use():
    bounds = cpu.usable_cpus()
    threads = cpu.default_threads()
    assert 1 <= threads <= (bounds["affinity"] or os.cpu_count())
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        code = (
            "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from cifar10kit.runtime.cpu import default_threads; print(default_threads())"
        )
        import subprocess

        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.stdout.strip() == "1", r.stderr


def test_threads_reach_the_session():
    model = Classifier(DEFAULT_MODEL, provider="cpu", threads=1)
    assert model.threads == 1 and model.spinning is False
    assert Classifier(DEFAULT_MODEL, provider="cpu", threads=2, spinning=True).spinning is True


# ----------------------------------------------------------------------------------------------
# Where data lives


def test_user_cache_dir_per_platform(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert locations.user_cache_dir("linux", env) == tmp_path / ".cache" / "cifar10kit"
    assert locations.user_cache_dir("linux", {**env, "XDG_CACHE_HOME": "/x/cache"}) == locations.Path(
        "/x/cache/cifar10kit"
    )
    assert (
        locations.user_cache_dir("linux", {**env, "XDG_CACHE_HOME": "relative"}) == tmp_path / ".cache" / "cifar10kit"
    )
    assert locations.user_cache_dir("darwin", env) == tmp_path / "Library" / "Caches" / "cifar10kit"
    win = locations.user_cache_dir("win32", {**env, "LOCALAPPDATA": str(tmp_path / "Local")})
    assert win == tmp_path / "Local" / "cifar10kit" / "Cache"


def test_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(tmp_path / "env"))
    assert locations.resolve_data_dir(None) == tmp_path / "env"
    assert locations.resolve_data_dir(tmp_path / "given") == tmp_path / "given"
    assert locations.resolve_data_dir(tmp_path / "given" / "cifar-10-batches-py") == tmp_path / "given"
    monkeypatch.delenv("CIFAR10_DATA")
    assert locations.default_data_dir() == locations.user_cache_dir()


# ----------------------------------------------------------------------------------------------
# The CSV dialect and the image-file rule


def test_results_csv_columns_and_values(tmp_path):
    good = Result("a.png", "cat", 0.75, [("cat", 0.75), ("dog", 0.2), ("frog", 0.05)], uncertain=True)
    bad = Result('b,"odd".png', error="b.png: not an image")
    path = tmp_path / "out.csv"
    results_csv.write_results(path, [good, bad], top_k=2, provider="CPUExecutionProvider")
    assert path.read_bytes().startswith(b"path,label,probability,top1_label,top1_probability,top2_label,")
    rows = results_csv.read_results(path)
    assert (
        list(rows[0])
        == results_csv.columns(2)
        == [
            "path",
            "label",
            "probability",
            "top1_label",
            "top1_probability",
            "top2_label",
            "top2_probability",
            "uncertain",
            "error",
            "provider",
        ]
    )
    assert rows[0]["top2_label"] == "dog" and float(rows[0]["top2_probability"]) == 0.2
    assert rows[0]["uncertain"] == "true" and rows[0]["error"] == "" and rows[0]["provider"] == "CPUExecutionProvider"
    assert rows[1]["path"] == 'b,"odd".png' and rows[1]["label"] == "" and rows[1]["uncertain"] == "false"
    assert rows[1]["top1_label"] == "" and rows[1]["error"] == "b.png: not an image"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_results_csv_is_atomic(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("previous\n")
    with pytest.raises(RuntimeError), results_csv.ResultsCsv(path, 1, "CPUExecutionProvider") as out:
        out.write(Result("a.png", "cat", 0.9, [("cat", 0.9)]))
        raise RuntimeError("interrupted")
    assert path.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_image_file_rule(tmp_path):
    (tmp_path / "dir.png").mkdir()
    for name in ("a.PNG", "b.jpeg", ".hidden.png", "._mac.jpg", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(p.name for p in tmp_path.iterdir() if is_image_file(p))
    assert found == ["a.PNG", "b.jpeg", "c.webp"]
    assert ".png" in IMAGE_SUFFIXES and all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
