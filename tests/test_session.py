"""Sessions fitted to the machine: typed model metadata, the CUDA fallback and its diagnosis, the
Classifier's options and outputs, which model file, CPU threads from affinity and cgroup quotas,
data folders, the CSV dialect, the image-file rule."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cifar10kit.runtime import contract, cpu, locations, providers, results_csv
from cifar10kit.runtime.contract import ContractError, ModelInfo
from cifar10kit.runtime.predict import Result
from cifar10kit.runtime.preprocess import IMAGE_SUFFIXES, is_image_file
from cifar10kit.runtime.session import (
    DEFAULT_MODEL,
    MODELS_DIR,
    Classifier,
    ProviderError,
    available_providers,
    default_model_path,
    resolve_model_path,
    shipped_models,
)

from conftest import CLASSES, cli, make_contract_model, probe_probabilities

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
    assert info.temperature == float(raw[contract.KEY_TEMPERATURE])
    # One seed where every member shares it; empty (None) for an ensemble of several seeds, as shipped now.
    seeds = {m["seed"] for m in info.recipe.values()} if "member 1" in info.recipe else {info.recipe["seed"]}
    assert info.seed == (seeds.pop() if len(seeds) == 1 else None) and raw[contract.KEY_SEED] == (
        "" if info.seed is None else str(info.seed)
    )
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
    # The library the loader could not find, as the loader itself reports it once the CUDA libraries
    # that pip installs (nvidia-* wheels) are loaded: the Classifier must have preloaded them.
    ort.preload_dlls()
    missing = providers.missing_library(ort)
    assert missing and missing.split(":")[0] in note and ".so" in missing.split(":")[0]
    assert note == f"note: CUDA not used, running on the CPU: {providers.cuda_failure_reason(ort)}"
    assert model.fallback_reason == providers.cuda_failure_reason(ort)
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
    assert model.fallback_reason == "no NVIDIA driver (libcuda) on this machine"
    with pytest.raises(ProviderError) as strict:
        Classifier(DEFAULT_MODEL, provider="cuda", driver_probe=lambda: False)
    assert str(strict.value) == (
        "--provider cuda: CUDA is not usable: no NVIDIA driver (libcuda) on this machine; use --provider auto or cpu"
    )


def test_cpu_never_probes_the_driver():
    probed: list[bool] = []
    notes: list[str] = []
    model = Classifier(DEFAULT_MODEL, provider="cpu", notify=notes.append, driver_probe=lambda: probed.append(True))
    assert probed == [] and notes == [] and model.fallback_reason is None
    assert model.provider == "CPUExecutionProvider" and model.requested_provider == "cpu"


@pytest.mark.parametrize("provider,driver", [("cpu", False), ("auto", False), ("auto", True)])
def test_opening_a_model_prints_nothing_but_the_note(provider, driver, capfd):
    """stdout carries --json output: onnxruntime's own complaints (loader errors, unknown provider
    names, warnings) must not reach it, nor stderr; the fallback note is the one line we write."""
    if driver and not _cuda_fails_here():
        pytest.skip("needs onnxruntime-gpu on a machine without a usable NVIDIA driver")
    notes: list[str] = []
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Classifier(DEFAULT_MODEL, provider=provider, notify=notes.append, driver_probe=lambda: driver)
    assert capfd.readouterr() == ("", "")
    assert [str(w.message) for w in caught] == []
    assert len(notes) == (1 if driver else 0)


@needs_failing_cuda
def test_onnxruntime_is_silenced_only_while_cuda_is_tried(capfd):
    """Afterwards onnxruntime logs its errors again, and only errors (severity 3, not warnings):
    a plain CUDA session of the caller's own reports the missing library as usual."""

    def plain_cuda_session_log() -> str:
        capfd.readouterr()
        ort.InferenceSession(str(DEFAULT_MODEL), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        return capfd.readouterr().err

    Classifier(DEFAULT_MODEL, provider="auto", notify=lambda _: None, driver_probe=lambda: True)
    log = plain_cuda_session_log()
    assert "[E:onnxruntime" in log and "[W:onnxruntime" not in log
    Classifier(DEFAULT_MODEL, provider="cpu")
    log = plain_cuda_session_log()
    assert "[E:onnxruntime" in log and "[W:onnxruntime" not in log


def _broken_model_error(path) -> str:
    """The first line of onnxruntime's own error for this file, asked of onnxruntime directly."""
    with pytest.raises(Exception) as raised:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return str(raised.value).splitlines()[0]


def test_a_broken_file_is_a_contract_error_on_every_provider(tmp_path):
    """Even in a folder named CUDA (onnxruntime quotes the path in its error): the file is broken,
    CUDA is not to blame, so no note and no ProviderError. The detail is onnxruntime's first line,
    cut at 300 characters."""
    folder = tmp_path / "CUDA-models" / ("x" * 200)
    folder.mkdir(parents=True)
    bad = folder / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    detail = _broken_model_error(bad)
    assert len(detail) > 300 and "CUDA-models" in detail[:300]
    cases = [("cpu", False), ("auto", False)]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        cases += [("auto", True), ("cuda", True)]  # the CUDA attempt meets the broken file first
    for provider, driver in cases:
        notes: list[str] = []
        with pytest.raises(ContractError) as err:
            Classifier(bad, provider=provider, notify=notes.append, driver_probe=lambda d=driver: d)
        assert str(err.value) == f"{bad}: not a loadable ONNX model ({detail[:300]})", provider
        assert notes == [], provider


def _model_with_an_op_named_cuda(path):
    """A contract model with an unknown op, CUDAMean: onnxruntime's load error then mentions CUDA
    (as the CUDA provider's own failures do), on any provider."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(make_contract_model(path)))
    (mean,) = [node for node in model.graph.node if node.op_type == "ReduceMean"]
    mean.op_type = "CUDAMean"
    onnx.save(model, str(path))
    return path


def test_an_error_that_mentions_cuda_is_blamed_on_cuda_only_while_cuda_is_tried(tmp_path):
    path = _model_with_an_op_named_cuda(tmp_path / "cuda-op.onnx")
    detail = _broken_model_error(path)
    assert "CUDAMean" in detail and "CUDA" not in str(path)
    with pytest.raises(ContractError) as err:  # on the CPU no CUDA is involved: the file is at fault
        Classifier(path, provider="cpu")
    assert str(err.value) == f"{path}: not a loadable ONNX model ({detail[:300]})"
    if not _cuda_fails_here():
        return
    # While CUDA is tried, an error that mentions CUDA means CUDA failed: --provider cuda says so,
    # auto notes it and runs on the CPU, where the file is reported as not loadable.
    with pytest.raises(ProviderError) as strict:
        Classifier(path, provider="cuda", driver_probe=lambda: True)
    reason = providers.cuda_failure_reason(ort, detail)
    assert str(strict.value) == f"--provider cuda: CUDA is not usable: {reason}; use --provider auto or cpu"
    notes: list[str] = []
    with pytest.raises(ContractError):
        Classifier(path, provider="auto", notify=notes.append, driver_probe=lambda: True)
    assert notes == [f"note: CUDA not used, running on the CPU: {reason}"]


# ----------------------------------------------------------------------------------------------
# The Classifier: its defaults, the session options it sets, running and reading the results


def test_provider_names_and_defaults(monkeypatch):
    with pytest.raises(ValueError) as err:
        Classifier(DEFAULT_MODEL, provider="gpu")
    assert str(err.value) == "provider 'gpu': use auto, cuda or cpu"
    monkeypatch.delenv("CIFAR10_MODEL", raising=False)
    model = Classifier()  # the shipped model, provider auto, threads from the machine
    assert model.path == DEFAULT_MODEL and model.requested_provider == "auto"
    assert model.threads == cpu.default_threads() and model.last_seconds == 0.0
    if not providers.cuda_driver_present():
        assert model.fallback_reason == "no NVIDIA driver (libcuda) on this machine"
    assert model.facts() == {
        "model": str(DEFAULT_MODEL),
        "provider": model.provider,
        "requested_provider": "auto",
        "provider_note": model.fallback_reason,
        "threads": model.threads,
        "spinning": model.spinning,
    }


def test_facts_of_a_cpu_session(tmp_path):
    path = make_contract_model(tmp_path / "m.onnx")
    model = Classifier(path, provider="cpu", threads=3, spinning=False)
    assert model.facts() == {
        "model": str(path),
        "provider": "CPUExecutionProvider",
        "requested_provider": "cpu",
        "provider_note": None,
        "threads": 3,
        "spinning": False,
    }


@pytest.mark.parametrize("threads", [0, -1, None])
def test_threads_not_given_come_from_the_machine(threads):
    assert Classifier(DEFAULT_MODEL, provider="cpu", threads=threads).threads == cpu.default_threads()


@pytest.mark.parametrize(
    "threads,load,spinning",
    [(1, 0.0, False), (2, 0.0, True), (2, 1.99, True), (2, 2.0, False), (3, 2.5, True), (3, 7.0, False)],
)
def test_workers_spin_unless_one_thread_or_a_busy_machine(monkeypatch, threads, load, spinning):
    """Busy: the 1-minute load average already fills the threads (cpu.machine_busy)."""
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    model = Classifier(DEFAULT_MODEL, provider="cpu", threads=threads)
    assert model.spinning is spinning
    assert model.facts()["spinning"] is spinning


@pytest.mark.parametrize("provider", ["cpu", "auto"])
@pytest.mark.parametrize("spinning", [True, False])
def test_session_options_reach_onnxruntime(provider, spinning):
    model = Classifier(DEFAULT_MODEL, provider=provider, threads=2, spinning=spinning, driver_probe=lambda: False)
    opts = model.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")
    assert opts.log_severity_level == 3  # the session reports errors (only a CUDA attempt is quiet)


def _cam_first_model(path):
    """A contract model with a cam output [N, C, 1, 1] (the probabilities, reshaped) listed before
    the probabilities: outputs are found by name, never by position."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(make_contract_model(path)))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "cam_axes"))
    graph.node.append(helper.make_node("Unsqueeze", [contract.OUTPUT_PROBS, "cam_axes"], [contract.OUTPUT_CAM]))
    graph.output.insert(0, helper.make_tensor_value_info(contract.OUTPUT_CAM, TensorProto.FLOAT, ["N", 10, 1, 1]))
    onnx.save(model, str(path))
    return path


def test_probabilities_and_cam_by_name(tmp_path):
    model = Classifier(_cam_first_model(tmp_path / "cam.onnx"), provider="cpu")
    assert model.info.has_cam and model.output_names == [contract.OUTPUT_PROBS, contract.OUTPUT_CAM]
    pixels = np.stack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 2, np.uint8)])
    expected = probe_probabilities(pixels)
    plain = model.run(pixels)
    assert plain.probs.shape == (2, 10) and plain.cam is None
    np.testing.assert_allclose(plain.probs, expected, rtol=1e-5)
    both = model.run(pixels, with_cam=True)
    assert both.probs.shape == (2, 10) and both.cam.shape == (2, 10, 1, 1)
    np.testing.assert_allclose(both.probs, expected, rtol=1e-5)
    np.testing.assert_allclose(both.cam[:, :, 0, 0], expected, rtol=1e-5)
    # A model without a cam output: asking for one gives None, not an error.
    bare = Classifier(make_contract_model(tmp_path / "bare.onnx"), provider="cpu")
    assert not bare.info.has_cam and bare.output_names == [contract.OUTPUT_PROBS]
    assert bare.run(pixels[0], with_cam=True).cam is None


def test_run_times_itself():
    model = Classifier(DEFAULT_MODEL, provider="cpu")
    assert model.last_seconds == 0.0
    t0 = time.perf_counter()
    result = model.run(np.zeros((4, 32, 32, 3), np.uint8))
    wall = time.perf_counter() - t0
    assert isinstance(result.seconds, float) and 0 < result.seconds == model.last_seconds <= wall


def test_no_images_give_an_empty_float32_table():
    probs = Classifier(DEFAULT_MODEL, provider="cpu").predict_probs(np.zeros((0, 32, 32, 3), np.uint8))
    assert probs.shape == (0, 10) and probs.dtype == np.float32


def test_topk_defaults_to_five_and_breaks_ties_by_class_order():
    model = Classifier(DEFAULT_MODEL, provider="cpu")
    # A confident row: every other class underflows to exactly 0, a 9-way tie below the winner.
    probs = np.zeros(10, np.float32)
    probs[4] = 1.0
    assert model.topk(probs) == [("deer", 1.0), ("airplane", 0.0), ("automobile", 0.0), ("bird", 0.0), ("cat", 0.0)]
    assert [name for name, _ in model.topk(np.full(10, 0.1, np.float32), 3)] == list(CLASSES[:3])


def test_the_output_type_is_named_when_not_float32(tmp_path):
    path = make_contract_model(tmp_path / "double.onnx", output_dtype="double")
    with pytest.raises(ContractError) as err:
        Classifier(path, provider="cpu")
    assert str(err.value) == f"{path}: 'probabilities' is tensor(double), not float32"


# ----------------------------------------------------------------------------------------------
# Which model file: a path, a shipped model by name, $CIFAR10_MODEL


def test_shipped_models_and_providers():
    assert shipped_models() == ["clean", "default"]
    assert available_providers() == ort.get_available_providers()


def test_a_shipped_model_by_name_unless_such_a_file_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("clean") == MODELS_DIR / "clean.onnx"
    assert resolve_model_path("nothing-shipped") == Path("nothing-shipped")
    # A path with folders is never a shipped name, even when its last part is one.
    assert resolve_model_path(tmp_path / "default") == tmp_path / "default"
    assert resolve_model_path(str(tmp_path / "clean")) == tmp_path / "clean"
    (tmp_path / "clean").write_bytes(b"")  # a file of that name here wins
    assert resolve_model_path("clean") == Path("clean")


def test_the_default_model_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_MODEL", raising=False)
    assert default_model_path() == DEFAULT_MODEL
    assert resolve_model_path(None) == resolve_model_path("") == DEFAULT_MODEL
    monkeypatch.setenv("CIFAR10_MODEL", "")
    assert default_model_path() == DEFAULT_MODEL
    monkeypatch.setenv("CIFAR10_MODEL", str(tmp_path / "mine.onnx"))
    assert default_model_path() == resolve_model_path(None) == tmp_path / "mine.onnx"


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


# Flags lines as Linux writes them (abridged) for the CPU kinds this project has met.
ZEN3_FLAGS = "flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes vpclmulqdq"
ZEN4_FLAGS = ZEN3_FLAGS + " avx512f avx512dq avx512_bf16 avx512vl avx512_vnni avx512_bitalg"
SAPPHIRE_RAPIDS_FLAGS = ZEN4_FLAGS + " avx_vnni amx_bf16 amx_tile amx_int8"
GRAVITON3_FEATURES = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve i8mm bf16"


@pytest.mark.parametrize(
    "cpuinfo, tier",
    [
        (ZEN3_FLAGS, "AVX2, no VNNI or bf16"),
        (ZEN4_FLAGS, "AVX-512 VNNI + BF16"),
        (SAPPHIRE_RAPIDS_FLAGS, "AMX bf16/int8"),
        (GRAVITON3_FEATURES, "NEON + dot product, i8mm, bf16"),
        ("processor\t: 0\nmodel name\t: Some CPU", None),
    ],
)
def test_vector_tier_names_what_sets_int8_and_bf16_speed(tmp_path, cpuinfo, tier):
    # Two processors, as Linux lists them: the flags are read from each and merged.
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\n{cpuinfo}\n\nprocessor\t: 1\n{cpuinfo}\n")
    assert cpu.vector_tier(cpu.cpu_flags(tmp_path / "cpuinfo")) == tier
    assert cpu.cpu_flags(tmp_path / "missing") == set()


def test_machine_names_this_cpus_tier():
    from cifar10kit.runtime.bench import machine

    tier = cpu.vector_tier(cpu.cpu_flags())
    text = machine()
    assert text.endswith(" cores") and (tier is None or f"({tier})" in text)


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
