"""The checkpoint format (train/checkpoint.py): what training writes is what export and --resume read."""

from __future__ import annotations

import pytest

from conftest import CLASSES, has_torch

pytestmark = pytest.mark.skipif(not has_torch(), reason="needs the [train] extra (torch)")


def _net_and_optimiser():
    import torch

    from cifar10kit.train.model import AirNet

    torch.manual_seed(0)
    net = AirNet((8, 16, 16), 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()  # a momentum buffer, so the optimiser state is not empty
    return net.eval(), opt


def _model_fields(net, **over):
    from cifar10kit.runtime import contract as C

    fields = dict(
        widths=net.widths,
        class_names=CLASSES,
        mean=C.CIFAR10_MEAN,
        std=C.CIFAR10_STD,
        dataset="CIFAR-10",
        model=net.state_dict(),
        config={"preset": "smoke", "seed": 3},
        test_acc=0.5,
        tta="flip",
    )
    return {**fields, **over}


def test_training_state_round_trip(tmp_path):
    import torch

    from cifar10kit.train import checkpoint as ck

    net, opt = _net_and_optimiser()
    history = [{"epoch": 1, "train_loss": 2.0, "test_acc": None}]
    path = tmp_path / "last.pt"
    ck.save_training_state(
        path,
        config={"widths": (8, 16, 16), "seed": 1},
        epoch=1,
        model=net.state_dict(),
        sgd=opt.state_dict(),
        muon=opt.state_dict(),
        history=history,
    )
    raw = torch.load(path, weights_only=True)
    assert tuple(raw) == ck.TRAINING_STATE_KEYS  # the keys runs in progress already have
    state = ck.load_training_state(path)
    assert state["epoch"] == 1 and state["history"] == history
    for k, v in net.state_dict().items():
        assert torch.equal(state["model"][k], v), k
    restored = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(state["sgd"])
    buf = next(iter(restored.state.values()))["momentum_buffer"]
    assert torch.equal(buf, next(iter(opt.state.values()))["momentum_buffer"])


def test_model_checkpoint_round_trip_gives_the_same_network(tmp_path):
    import torch

    from cifar10kit.train import checkpoint as ck

    net, _ = _net_and_optimiser()
    path = tmp_path / "model.pt"
    ck.save_model_checkpoint(path, **_model_fields(net))
    raw = torch.load(path, weights_only=True)
    assert tuple(raw) == ck.MODEL_CHECKPOINT_KEYS and raw["format"] == ck.FORMAT
    loaded, meta = ck.load_model(path)
    assert meta["class_names"] == list(CLASSES) and meta["widths"] == [8, 16, 16] and meta["tta"] == "flip"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_files_written_before_the_module_existed_still_load(tmp_path):
    """Runs in progress hold last.pt / model.pt written inline by the trainer: the same keys."""
    import dataclasses

    import torch

    from cifar10kit.train import checkpoint as ck
    from cifar10kit.train.trainer import make_config

    net, opt = _net_and_optimiser()
    cfg = dataclasses.asdict(make_config("smoke", widths=(8, 16, 16)))
    torch.save(
        dict(config=cfg, epoch=2, model=net.state_dict(), sgd=opt.state_dict(), muon=opt.state_dict(), history=[]),
        tmp_path / "last.pt",
    )
    torch.save(
        dict(
            format="cifar10kit-checkpoint",
            arch="airnet",
            widths=[8, 16, 16],
            class_names=list(CLASSES),
            mean=[125.3, 123.0, 113.9],
            std=[63.0, 62.1, 66.7],
            dataset="CIFAR-10",
            model=net.state_dict(),
            config=cfg,
            test_acc=0.4,
            tta="translate",
        ),
        tmp_path / "model.pt",
    )
    assert ck.load_training_state(tmp_path / "last.pt")["epoch"] == 2
    assert ck.resolve_checkpoint(tmp_path) == tmp_path / "model.pt"
    assert ck.load_model(tmp_path / "model.pt")[1]["tta"] == "translate"
    # An unfinished run (no model.pt yet) exports from last.pt, described as CIFAR-10.
    (tmp_path / "model.pt").unlink()
    assert ck.resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    net2, meta = ck.load_model(tmp_path)
    assert meta["class_names"] == list(CLASSES) and tuple(meta["widths"]) == (8, 16, 16)


def test_bad_files_are_refused_with_the_file_named(tmp_path):
    import torch

    from cifar10kit.train import checkpoint as ck

    net, opt = _net_and_optimiser()
    model_pt = tmp_path / "model.pt"
    ck.save_model_checkpoint(model_pt, **_model_fields(net))
    with pytest.raises(ck.CheckpointError, match="not a training state.*--resume") as e:
        ck.load_training_state(model_pt)  # a finished model is not something to resume
    assert str(model_pt) in str(e.value)
    # The writer refuses what the reader would refuse, and writes nothing.
    bad = tmp_path / "bad.pt"
    with pytest.raises(ck.CheckpointError, match="widths"):
        ck.save_model_checkpoint(bad, **_model_fields(net, widths=(8, 16)))
    with pytest.raises(ck.CheckpointError, match="class_names"):
        ck.save_model_checkpoint(bad, **_model_fields(net, class_names=[]))
    assert not bad.exists() and not list(tmp_path.glob(".bad.pt.*"))
    # Weights of another shape: refused with the architecture named.
    ck.save_model_checkpoint(bad, **_model_fields(net, widths=(16, 16, 16)))
    with pytest.raises(ck.CheckpointError, match="weights do not fit airnet-16-16-16"):
        ck.load_model(bad)
    torch.save({"epoch": 1}, bad)
    with pytest.raises(ck.CheckpointError, match="not a cifar10kit checkpoint"):
        ck.load_model_checkpoint(bad)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(ck.CheckpointError, match="no model.pt or last.pt"):
        ck.resolve_checkpoint(tmp_path / "empty-run")


def test_a_real_run_writes_both_kinds(trained_run):
    from cifar10kit.train import checkpoint as ck

    state = ck.load_training_state(trained_run / "last.pt")
    assert state["epoch"] == len(state["history"]) == state["config"]["epochs"]
    net, meta = ck.load_model(trained_run / "model.pt")
    assert meta["format"] == ck.FORMAT and set(meta) == set(ck.MODEL_CHECKPOINT_KEYS)
    assert net.arch == f"airnet-{'-'.join(map(str, meta['widths']))}"
