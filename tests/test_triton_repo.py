"""`cifar10 triton-repo`: a Triton model repository (onnxruntime backend), checked against Triton's own
model-config schema (the protobuf that `tritonclient` ships), parsed from the written text."""

from __future__ import annotations

import pytest

from cifar10kit.runtime import contract as C
from cifar10kit.runtime import server
from cifar10kit.runtime.contract import ContractError
from cifar10kit.runtime.session import DEFAULT_MODEL, Classifier
from cifar10kit.runtime.triton_repo import RepositoryError, write_repository

from conftest import cli


def parse(folder):
    """config.pbtxt through Triton's ModelConfig message: unknown fields or bad values raise."""
    text_format = pytest.importorskip("google.protobuf.text_format", reason="needs protobuf (the [serve] extra)")
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs the [serve] extra (tritonclient)")
    return text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig()), pb


def test_repository_follows_triton_schema_and_the_model_contract(tmp_path):
    folder = write_repository(DEFAULT_MODEL, tmp_path / "repo")
    cfg, pb = parse(folder)
    model = Classifier(DEFAULT_MODEL, provider="cpu")
    n = len(model.class_names)

    assert folder == tmp_path / "repo" / "cifar10" and cfg.name == "cifar10"
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == server.MAX_BATCH_SIZE
    (inp,) = cfg.input
    assert (inp.name, inp.data_type, list(inp.dims)) == (C.INPUT_NAME, pb.TYPE_UINT8, [32, 32, 3])
    assert inp.format == pb.ModelInput.FORMAT_NHWC
    outputs = {o.name: o for o in cfg.output}
    assert set(outputs) == {C.OUTPUT_PROBS, C.OUTPUT_CAM}
    assert outputs[C.OUTPUT_PROBS].data_type == pb.TYPE_FP32 and list(outputs[C.OUTPUT_PROBS].dims) == [n]
    assert outputs[C.OUTPUT_PROBS].label_filename == "labels.txt"
    cam_dims = list(next(o.shape for o in model.session.get_outputs() if o.name == C.OUTPUT_CAM)[1:])
    assert list(outputs[C.OUTPUT_CAM].dims) == cam_dims and outputs[C.OUTPUT_CAM].data_type == pb.TYPE_FP32

    batching = cfg.dynamic_batching
    assert list(batching.preferred_batch_size) == list(server.PREFERRED_BATCH_SIZES)
    assert all(b <= cfg.max_batch_size for b in batching.preferred_batch_size)
    assert batching.max_queue_delay_microseconds == server.QUEUE_DELAY_US > 0
    (group,) = cfg.instance_group
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU and group.count == 1

    # The classification extension reads one label a line, line i naming output column i.
    assert (folder / "labels.txt").read_text().splitlines() == list(model.class_names)
    assert (folder / "1" / "model.onnx").read_bytes() == DEFAULT_MODEL.read_bytes()


def test_cpu_variant_and_rewrite_in_place(tmp_path):
    repo = tmp_path / "repo"
    write_repository(DEFAULT_MODEL, repo)
    (repo / "cifar10" / "stale.txt").write_text("from an older repository")
    folder = write_repository(DEFAULT_MODEL, repo, kind="cpu")
    cfg, pb = parse(folder)
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt", "labels.txt"]  # replaced whole
    assert [p.name for p in repo.iterdir()] == ["cifar10"]  # no temporary folders left behind


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(RepositoryError, match="model name"):
        write_repository(DEFAULT_MODEL, tmp_path / "repo", name="../escape")
    with pytest.raises(RepositoryError, match="instance kind"):
        write_repository(DEFAULT_MODEL, tmp_path / "repo", kind="tpu")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(ContractError, match="fake.onnx"):
        write_repository(fake, tmp_path / "repo")
    assert not (tmp_path / "repo" / "cifar10").exists()


def test_cli_writes_the_repository(tmp_path):
    r = cli("triton-repo", str(DEFAULT_MODEL), str(tmp_path / "models"), "--name", "cifar10-int8", "--kind", "cpu")
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "models" / "cifar10-int8"
    assert "tritonserver --model-repository" in r.stdout and (folder / "1" / "model.onnx").exists()
    cfg, pb = parse(folder)
    assert cfg.name == "cifar10-int8" and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    bad = cli("triton-repo", str(tmp_path / "missing.onnx"), str(tmp_path / "models"))
    assert bad.returncode == 2 and "missing.onnx" in bad.stderr and "Traceback" not in bad.stderr
