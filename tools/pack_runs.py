"""Carry finished runs off a machine whose file transfers are capped: weights halved, parts of a set size.

    python tools/pack_runs.py pack RUN_DIR... -o OUT/runs [--part-mb 15]
    python tools/pack_runs.py unpack OUT/runs.part* --dest runs

`pack` writes one tar of each run's model.pt (its conv and linear weights as fp16, half the bytes; BatchNorm
statistics and everything else as they are) and its small records (config.json, summary.json,
metrics.jsonl), split into parts of at most --part-mb MiB. `unpack` joins the parts, checks them, and
rebuilds each run folder with fp32 weights, ready for `cifar10 export`. fp16 keeps 11 significant bits:
the weights change by at most 1 part in 2,048, less than the bf16 rounding they were trained under.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
from pathlib import Path

import torch

from cifar10kit.train.checkpoint import atomic_save, read_checkpoint

RECORDS = ("config.json", "summary.json", "metrics.jsonl")


def halve(ckpt: dict) -> dict:
    model = {k: v.half() if v.is_floating_point() and v.ndim >= 2 else v for k, v in ckpt["model"].items()}
    return {**ckpt, "model": model}


def widen(ckpt: dict) -> dict:
    model = {k: v.float() if v.dtype == torch.float16 else v for k, v in ckpt["model"].items()}
    return {**ckpt, "model": model}


def pack(runs: list[Path], prefix: Path, part_mb: float) -> list[Path]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for run in runs:
            if not (run / "model.pt").exists():
                raise SystemExit(f"{run}: no model.pt (did training finish?)")
            files = {"model.pt": _saved(halve(read_checkpoint(run / "model.pt")))}
            files |= {name: (run / name).read_bytes() for name in RECORDS if (run / name).exists()}
            for name, data in files.items():
                info = tarfile.TarInfo(f"{run.name}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    size = int(part_mb * 2**20)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(blob), size):
        part = prefix.with_name(f"{prefix.name}.part{i // size:02d}")
        part.write_bytes(blob[i : i + size])
        parts.append(part)
    prefix.with_name(f"{prefix.name}.sha256").write_text(hashlib.sha256(blob).hexdigest() + "\n")
    return parts


def unpack(parts: list[Path], dest: Path) -> list[Path]:
    parts = sorted(parts)
    blob = b"".join(p.read_bytes() for p in parts)
    digest = parts[0].with_name(parts[0].name.rsplit(".part", 1)[0] + ".sha256")
    if digest.exists() and digest.read_text().strip() != hashlib.sha256(blob).hexdigest():
        raise SystemExit(f"the parts do not add up to what was packed ({digest}): a part is missing or damaged")
    runs = []
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for member in tar.getmembers():
            run, _, name = member.name.partition("/")
            if not member.isfile() or "/" in name or name not in ("model.pt", *RECORDS) or run in ("", ".", ".."):
                raise SystemExit(f"unexpected entry {member.name!r} in the packed runs: refused")
            target = dest / run / name
            target.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member).read()
            if name == "model.pt":
                ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                atomic_save(widen(ckpt), target)
                runs.append(target.parent)
            else:
                target.write_bytes(data)
    return runs


def _saved(obj: dict) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True, help="prefix of the parts: OUT.part00, ...")
    p.add_argument("--part-mb", type=float, default=15)
    u = sub.add_parser("unpack")
    u.add_argument("parts", nargs="+", type=Path)
    u.add_argument("--dest", type=Path, default=Path("runs"))
    args = ap.parse_args()
    if args.command == "pack":
        for part in pack(args.runs, args.out, args.part_mb):
            print(f"{part}  {part.stat().st_size / 2**20:.1f} MiB")
    else:
        for run in unpack(args.parts, args.dest):
            print(f"unpacked {run}")


if __name__ == "__main__":
    main()
