"""The exported file follows the contract, matches PyTorch, and export refuses when it does not."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cifar10kit.runtime import contract as C

from conftest import has_torch

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def test_contract_of_the_file(trained_model):
    model = onnx.load(str(trained_model))
    onnx.checker.check_model(model, full_check=True)
    assert any(o.domain in ("", "ai.onnx") and o.version == C.OPSET for o in model.opset_import)
    (inp,) = model.graph.input
    assert inp.name == C.INPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]  # dynamic batch
    assert [o.name for o in model.graph.output] == [C.OUTPUT_PROBS, C.OUTPUT_CAM]
    meta = {p.key: p.value for p in model.metadata_props}
    assert set(C.REQUIRED_KEYS) <= set(meta)
    assert json.loads(meta[C.KEY_CLASS_NAMES])[0] == "airplane"
    assert len(meta[C.KEY_CHECKPOINT_SHA256]) == 64
    assert 0 <= float(meta[C.KEY_TEST_ACCURACY]) <= 1
    recipe = json.loads(meta[C.KEY_RECIPE])
    assert recipe["preset"] == "smoke" and recipe["epochs"] == 2
    assert not {"data_dir", "out", "name", "device", "threads"} & set(recipe)  # no local paths travel in the file
    assert float(meta[C.KEY_GFLOP_PER_IMAGE]) > 0


@pytest.mark.parametrize("n", [1, 7])
def test_outputs_for_any_batch(trained_model, n):
    sess = ort.InferenceSession(str(trained_model), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    probs, cam = sess.run(None, {C.INPUT_NAME: pixels})
    assert probs.shape == (n, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert cam.shape[:2] == (n, 10) and cam.ndim == 4


def test_onnx_equals_pytorch(trained_run, trained_model, tiny_cifar):
    import torch

    from cifar10kit.export.graph import Deployable
    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.train.checkpoint import load_model

    net, ckpt = load_model(trained_run / "model.pt")
    module = Deployable(net, ckpt["mean"], ckpt["std"], "flip" if ckpt["tta"] != "none" else "none").eval()
    x, _, _ = load_cifar10(tiny_cifar, "test")
    with torch.no_grad():
        p_torch, cam_torch = (t.numpy() for t in module(torch.from_numpy(x)))
    sess = ort.InferenceSession(str(trained_model), providers=["CPUExecutionProvider"])
    p_ort, cam_ort = sess.run(None, {C.INPUT_NAME: x})
    np.testing.assert_allclose(p_ort, p_torch, atol=1e-4)
    np.testing.assert_allclose(cam_ort, cam_torch, atol=1e-3)
    assert (p_ort.argmax(1) == p_torch.argmax(1)).all()


def test_flip_tta_in_graph_is_mirror_invariant(trained_run, tmp_path, tiny_cifar):
    from cifar10kit.export.exporter import export

    path = tmp_path / "tta.onnx"
    export(trained_run, path, data_dir=str(tiny_cifar), tta="flip", log=lambda *_: None)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p1 = sess.run([C.OUTPUT_PROBS], {C.INPUT_NAME: x})[0]
    p2 = sess.run([C.OUTPUT_PROBS], {C.INPUT_NAME: np.ascontiguousarray(x[:, :, ::-1])})[0]
    np.testing.assert_allclose(p1, p2, atol=1e-5)


def test_export_refuses_when_runtimes_disagree(trained_run, tmp_path, tiny_cifar, monkeypatch):
    from cifar10kit.export import exporter, verify

    real = verify.ort_probs

    def broken(path, pixels, batch=500):  # a runtime that gets 5% of answers wrong
        p = real(path, pixels, batch)
        k = max(1, len(p) // 20)
        p[:k] = np.roll(p[:k], 1, axis=1)
        return p

    monkeypatch.setattr(verify, "ort_probs", broken)
    out = tmp_path / "refused.onnx"
    with pytest.raises(exporter.ExportError, match="agreement"):
        exporter.export(trained_run, out, data_dir=str(tiny_cifar), log=lambda *_: None)
    assert not out.exists()
    assert not list(tmp_path.glob(".export-*"))  # nothing half-written left behind


def test_train_and_export_without_extra_say_how_to_install(tmp_path):
    import os
    import subprocess
    import sys

    # A child interpreter where `import torch` fails, as on a plain install.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None;"
        "import importlib.util as u; real = u.find_spec;"
        "u.find_spec = lambda n, *a: None if n in ('torch', 'torchvision') else real(n, *a);"
        "from cifar10kit.main import main; sys.exit(main(sys.argv[1:]))"
    )
    for cmd in (["train"], ["export", "x.pt", "-o", "y.onnx"]):
        r = subprocess.run(
            [sys.executable, "-c", code, *cmd], capture_output=True, text=True, cwd=tmp_path, env={**os.environ}
        )
        assert r.returncode != 0
        assert "pip install 'cifar10kit[train]'" in r.stderr and "Traceback" not in r.stderr


def test_translate_tta_graph_matches_training_evaluation(trained_run, tiny_cifar):
    """The exported 6-view graph batches its views; it must average them exactly as training's
    final evaluation (model.tta_logits) does."""
    import torch

    from cifar10kit.export.graph import Deployable
    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.train.checkpoint import load_model
    from cifar10kit.train.model import tta_logits

    net, ckpt = load_model(trained_run / "model.pt")
    x, _, _ = load_cifar10(tiny_cifar, "test")
    x = x[:64]
    module = Deployable(net, ckpt["mean"], ckpt["std"], "translate").eval()
    with torch.no_grad():
        probs, cam = module(torch.from_numpy(x))
        normalised = (torch.from_numpy(x).permute(0, 3, 1, 2).float() - module.mean) * module.inv_std
        reference = torch.softmax(tta_logits(net, normalised, "translate"), dim=1)
        plain_cam = net.class_maps(net.features(normalised))
    np.testing.assert_allclose(probs.numpy(), reference.numpy(), atol=1e-5)
    assert cam.shape == plain_cam.shape


def _run(path, pixels):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {C.INPUT_NAME: pixels})


def test_int8_and_fp16_variants(export_variant, tiny_cifar):
    from cifar10kit.runtime.dataset import load_cifar10

    files = {}
    for name, tta, precision in [
        ("fp32", "none", "fp32"),
        ("int8", "none", "int8"),
        ("int8-tta", "translate", "int8"),
        ("fp16", "none", "fp16"),
    ]:
        files[name], result = export_variant(precision, tta)
        assert result["metadata"][C.KEY_PRECISION] == precision and result["metadata"][C.KEY_TTA] == tta
    x, _, _ = load_cifar10(tiny_cifar, "test")
    reference = _run(files["fp32"], x)[0]
    for name, path in files.items():
        probs, cam = _run(path, x)
        assert probs.dtype == np.float32 and probs.shape == reference.shape and cam.shape[:2] == (len(x), 10)
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)  # a quantised softmax would not sum to 1
        agreement = (probs.argmax(1) == reference.argmax(1)).mean()
        assert agreement >= (0.98 if name == "fp16" else 0.85), (name, agreement)
    # A quantised 6-view graph holds each weight once (its views run as one batch), not six times.
    assert files["int8-tta"].stat().st_size < 1.25 * files["int8"].stat().st_size
    assert files["int8"].stat().st_size < 0.75 * files["fp32"].stat().st_size  # tiny net: graph overhead counts


# ----------------------------------------------------------------------------------------------
# Calibration


def test_export_calibrates_on_held_out_half(trained_run, calibrated_export, tmp_path):
    from cifar10kit.export.exporter import export
    from cifar10kit.runtime.dataset import load_cifar10

    data, cal, result = calibrated_export  # 1,000 labelled images: enough to calibrate on
    raw = tmp_path / "raw.onnx"
    quiet = dict(data_dir=str(data), tta="flip", calibrate=False, log=lambda *_: None)
    assert export(trained_run, raw, **quiet)["metadata"][C.KEY_TEMPERATURE] == "1.0000"
    fit = result["calibration"]
    assert fit["fit_images"] == fit["held_out_images"] == 500
    want = "CIFAR-10 test batch, 1000 images (the temperature on its even-numbered images)"
    assert result["metadata"][C.KEY_CALIBRATION_SET] == want
    assert fit["ece_after"] < fit["ece_before"]  # measured on the half the fit never saw
    t = float(result["metadata"][C.KEY_TEMPERATURE])
    assert t == pytest.approx(fit["temperature"], abs=1e-4) and abs(t - 1) > 0.05
    # The graph applies exactly that temperature: p_cal is p_raw ** (1/T), renormalised.
    x, _, _ = load_cifar10(data, "test")
    p_raw, p_cal = _run(raw, x[:64])[0], _run(cal, x[:64])[0]
    expected = p_raw.astype(np.float64) ** (1 / t)
    np.testing.assert_allclose(p_cal, expected / expected.sum(1, keepdims=True), atol=2e-4)
    assert (p_cal.argmax(1) == p_raw.argmax(1)).all()


def test_calibration_maths_imports_without_torch():
    """export/calibrate.py is numpy only: importable (and testable) where PyTorch is absent."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None;"
        "from cifar10kit.export.calibrate import fit_temperature, uncertainty_threshold, softmax;"
        "import numpy as np; assert abs(softmax(np.array([[0.0, 1.0]]), 0.5).sum() - 1) < 1e-12"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_an_ensemble_file_averages_its_members(trained_run, tmp_path, tiny_cifar, export_variant):
    """Several checkpoints make one file: the mean of their logits, one temperature, every member named."""
    import torch

    from cifar10kit.export.exporter import ExportError, export
    from cifar10kit.export.graph import Deployable
    from cifar10kit.runtime.dataset import load_cifar10
    from cifar10kit.train.checkpoint import load_model, read_checkpoint

    ckpt = read_checkpoint(trained_run / "model.pt")
    gen = torch.Generator().manual_seed(0)
    other = dict(
        ckpt,
        model={
            k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in ckpt["model"].items()
        },
    )
    torch.save(other, tmp_path / "other.pt")  # a second member that answers differently

    path = tmp_path / "ensemble.onnx"
    result = export([trained_run, tmp_path / "other.pt"], path, data_dir=str(tiny_cifar), tta="flip", log=print)
    meta = result["metadata"]
    single = load_model(trained_run)[0]
    assert meta[C.KEY_ARCHITECTURE] == f"ensemble of 2: {single.arch} + {single.arch}"
    hashes = meta[C.KEY_CHECKPOINT_SHA256].split(",")
    assert len(hashes) == 2 and hashes[0] != hashes[1] and all(len(h) == 64 for h in hashes)
    recipe = json.loads(meta[C.KEY_RECIPE])
    assert list(recipe) == ["member 1", "member 2"] and recipe["member 1"]["preset"] == "smoke"
    assert meta[C.KEY_SEED] == str(recipe["member 1"]["seed"])  # both members share the seed, so the file states it

    x, _, _ = load_cifar10(tiny_cifar, "test")
    with torch.no_grad():
        members = [
            Deployable(load_model(p)[0], ckpt["mean"], ckpt["std"], "flip").eval()
            for p in (trained_run, tmp_path / "other.pt")
        ]
        (la, ca), (lb, cb) = (m.scores(torch.from_numpy(x)) for m in members)
        expected = torch.softmax((la + lb) / 2 / float(meta[C.KEY_TEMPERATURE]), dim=1).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, cam = sess.run(None, {C.INPUT_NAME: x})
    np.testing.assert_allclose(probs, expected, atol=2e-4)
    np.testing.assert_allclose(cam, ((ca + cb) / 2).numpy(), atol=1e-3)
    assert not np.allclose(probs, torch.softmax(la, dim=1).numpy(), atol=1e-2)  # not just the first member
    one = float(export_variant("fp32", "flip")[1]["metadata"][C.KEY_GFLOP_PER_IMAGE])  # the same net, exported alone
    assert float(meta[C.KEY_GFLOP_PER_IMAGE]) == pytest.approx(2 * one, rel=0.01)  # bench divides by the real cost

    # Members that disagree on what the classes are cannot share a file: refused, naming the member.
    torch.save(dict(other, class_names=list(reversed(ckpt["class_names"]))), tmp_path / "renamed.pt")
    with pytest.raises(ExportError, match="renamed.pt was trained with other classes"):
        export([trained_run, tmp_path / "renamed.pt"], tmp_path / "no.onnx", data_dir=str(tiny_cifar), log=print)
    assert not (tmp_path / "no.onnx").exists()


def test_an_int8_ensemble_runs_the_same_in_a_second_runtime(trained_run, tmp_path, tiny_cifar):
    """Members trained on the same images have the same frozen whitening filters, which the graph holds
    once; OpenVINO 2026.4 miscomputed int8 graphs where one dequantised copy fed both members."""
    pytest.importorskip("openvino")
    import onnx
    import torch

    from cifar10kit.export.exporter import export
    from cifar10kit.train.checkpoint import read_checkpoint

    ckpt = read_checkpoint(trained_run / "model.pt")
    gen = torch.Generator().manual_seed(1)
    other = dict(
        ckpt,
        model={
            k: v + 0.05 * torch.randn(v.shape, generator=gen)
            if v.is_floating_point() and "whiten.weight" not in k
            else v
            for k, v in ckpt["model"].items()
        },
    )
    torch.save(other, tmp_path / "other.pt")
    path = tmp_path / "pair-int8.onnx"
    result = export(
        [trained_run, tmp_path / "other.pt"],
        path,
        data_dir=str(tiny_cifar),
        precision="int8",
        max_drop=0.2,
        calibration_n=128,
        log=lambda *_: None,
    )
    second = result["conformance"]
    assert second["runtime"].startswith("OpenVINO") and second["agreement"] >= 0.99, second

    graph = onnx.load(str(path)).graph
    users = collections.Counter(name for node in graph.node for name in node.input)
    weights = {t.name for t in graph.initializer}
    dequantized = [n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert dequantized and all(users[name] == 1 for name in dequantized)
