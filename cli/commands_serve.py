"""`cifar10 serve` and `cifar10 triton-repo`: the model file on Triton Inference Server.

`serve` runs a real Triton server here (PyTriton, the [serve] extra); `triton-repo` writes a model
repository that any Triton deployment (container, Kubernetes) serves with its onnxruntime backend.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, fail
from .common import open_model as _open_model


def cmd_triton_repo(args: argparse.Namespace) -> int:
    from .runtime.contract import ContractError
    from .runtime.triton_repo import RepositoryError, write_repository

    if not Path(args.model_file).exists():
        fail(f"{args.model_file}: no such model file", EXIT_USAGE)
    try:
        folder = write_repository(args.model_file, args.repo_dir, name=args.name, kind=args.kind)
    except (ContractError, RepositoryError, OSError) as e:
        err(str(e))
        return EXIT_FAILED
    print(f"Triton model repository: {folder} (config.pbtxt, labels.txt, 1/model.onnx; instances on the {args.kind})")
    print(f"serve it with: tritonserver --model-repository {Path(args.repo_dir).resolve()}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .runtime import server

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        server.preflight(args.host, args.port, args.grpc_port)  # before the model: fail fast
        model = _open_model(args)
        triton = server.start(model, host=args.host, http_port=args.port, grpc_port=args.grpc_port, name=args.name)
    except server.ServeError as e:
        fail(str(e), EXIT_FAILED)
    try:
        _banner(args, model, server, triton)
    except KeyboardInterrupt:  # Ctrl+C before serve_forever took over the signal
        triton.stop()
        return EXIT_OK
    return server.serve_forever(triton, notify=log)


def _banner(args, model, server, triton) -> None:
    print(f"serving {model.path} as '{args.name}' on Triton ({model.provider}): "
          f"HTTP http://{args.host}:{args.port}/v2/models/{args.name}, gRPC {args.host}:{args.grpc_port} "
          f"(KServe v2); dynamic batching up to {server.MAX_BATCH_SIZE}. Ctrl+C stops.", flush=True)  # fmt: skip
    print(f"Triton's log: {triton.log_file}", file=sys.stderr, flush=True)


def add_serve_parsers(sub, model_opts: Callable, threads_opt: Callable) -> None:
    tr = sub.add_parser("triton-repo", help="write a Triton model repository (onnxruntime backend) for a model file")
    tr.add_argument("model_file", metavar="MODEL", help="a .onnx model file")
    tr.add_argument("repo_dir", metavar="DIR", help="the repository folder; DIR/<name>/ is (re)written")
    tr.add_argument("--name", default="cifar10", help="the model's name on the server (default cifar10)")
    tr.add_argument("--kind", choices=["gpu", "cpu"], default="gpu", help="instance group kind (default gpu)")
    tr.set_defaults(func=cmd_triton_repo)

    sv = sub.add_parser("serve", help="serve the model with Triton Inference Server, HTTP + gRPC (needs [serve])")
    model_opts(sv)
    threads_opt(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    sv.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    sv.add_argument("--name", default="cifar10", help="the model's name on the server (default cifar10)")
    sv.set_defaults(func=cmd_serve)
