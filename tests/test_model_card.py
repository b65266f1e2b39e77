"""benchmarks/model_card.py: what the card says about a model's recipe, its members and its robustness."""

from __future__ import annotations

import json

import pytest

from conftest import REPO


def model_card_module():
    import importlib.util

    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("model_card", REPO / "benchmarks" / "model_card.py")
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    return card


def test_model_card_recipe_names_the_teachers():
    card = model_card_module()
    config = {"translate": 4, "cutout": 12, "teacher": ["/runs/big.onnx", "/runs/wide.onnx"], "distill": 0.7}
    config["distill_temp"] = 1.992
    assert card.augmentation_text(config) == (
        "augmentation flip + 4-pixel translate, 12-pixel cutout; "
        "distilled from big.onnx, wide.onnx (their probabilities at temperature 1.992, 70% of each target)"
    )
    assert "distilled" not in card.augmentation_text({"translate": 2, "teacher": []})


def test_model_card_says_the_precision_a_run_trained_in():
    card = model_card_module()
    assert card.recipe_text({"amp": "fp32", "translate": 2}).endswith(", fp32 throughout.")
    assert card.recipe_text({"amp": "bf16", "translate": 2}).endswith(", bf16 autocast.")
    # Runs from before `--amp auto` recorded nothing else than bf16.
    assert card.recipe_text({"translate": 2}).endswith(", bf16 autocast.")


def test_model_card_describes_each_member_of_an_ensemble(tmp_path):
    card = model_card_module()
    runs = []
    for name, seed, cutout in (("plain-s0", 0, 0), ("cut-s1", 1, 12)):
        run = tmp_path / name
        run.mkdir()
        config = {"seed": seed, "epochs": 30, "batch_size": 2000, "widths": [128, 384, 384], "cutout": cutout}
        (run / "config.json").write_text(json.dumps(config))
        summary = {"train_seconds": 600.0 * (seed + 1), "test_acc": 0.95, "test_acc_no_tta": 0.94, "tta": "flip"}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch_seconds": 20.0}) for _ in range(30)))
        runs.append(run)

    members = [(run.name, card.read_run(run)) for run in runs]
    lines = card.reproduce_lines(members, "a test machine", recipe={})
    described = [line for line in lines if line.startswith("- Member")]
    assert lines[0].startswith("An ensemble of 2 nets") and "a test machine" in lines[0]
    assert len(described) == 2
    assert "`plain-s0`" in described[0] and "Seed 0." in described[0] and "cutout" not in described[0]
    assert "`cut-s1`" in described[1] and "Seed 1." in described[1] and "12-pixel cutout" in described[1]
    assert "1200 s (20.0 min) for 30 epochs" in described[1] and "0.9500 with flip TTA" in described[1]

    cascade = card.reproduce_lines(members, "a test machine", recipe={}, cascade={"threshold": 0.95})
    assert cascade[0].startswith("A cascade of 2 nets: member 1 answers alone where its calibrated top probability")
    assert "0.95 or more" in cascade[0] and len([line for line in cascade if line.startswith("- Member")]) == 2

    single = card.reproduce_lines(members[:1], "a test machine", recipe={})
    assert single[0].startswith("Seed 0.") and single[-1].startswith("Hardware: a test machine. Training time 600 s")


def report_file(path, model: str, shift: float) -> str:
    from cifar10kit.runtime.robustness import Cell, RobustnessReport

    cells = [Cell(f, s, s * 10.0, 0.9 - 0.02 * s + shift, 0.01) for f in ("jpeg", "pixelate") for s in (1, 2)]
    report = RobustnessReport(model, 100, 0, 0.95 + shift, 0.01, cells)
    path.write_text(json.dumps({"reports": [report.as_json()]}))
    return str(path)


def test_model_card_robustness_table_compares_with_every_other_model(tmp_path):
    card = model_card_module()
    new = report_file(tmp_path / "new.json", "default.onnx", 0.0)
    before = report_file(tmp_path / "a.json", "/somewhere/clean.onnx", -0.10)
    close = report_file(tmp_path / "b.json", "default3.onnx", 0.0)  # the same as the new one: not better anywhere
    lines = card.robustness_section([new, before, close], [0.93, 0.87, 0.92], tmp_path)

    text = "\n".join(lines)
    assert "beside `clean.onnx` and `default3.onnx` on the same pictures" in text  # names, never paths
    assert "**0.9300** (`clean.onnx` 0.8700, `default3.onnx` 0.9200)" in text
    header = next(line for line in lines if line.startswith("| corruption"))
    assert header.count("difference") == 2
    jpeg1 = next(line for line in lines if line.startswith("| jpeg | 1 |"))
    assert jpeg1 == "| jpeg | 1 | 10 | 0.8800 | 0.0100 | 0.7800 | +10.00 | 0.8800 | +0.00 |"
    assert "Better than `clean.onnx` in every cell." in lines
    assert "Not better than `default3.onnx` in: jpeg 1, jpeg 2, pixelate 1, pixelate 2." in lines
    assert (tmp_path / "robustness.png").stat().st_size > 0
