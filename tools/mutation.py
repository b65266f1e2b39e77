"""Mutation testing of the torch-free core with mutmut (`make mutation`; slow, so not in CI).

mutmut names a mutant by its file path, so the package is laid out as installed (cifar10kit/...)
in a scratch folder, with the tests and pyproject.toml ([tool.mutmut] lists the mutated files and
the fast test files that run against each mutant). Then mutmut runs there, and the score and every
mutant that was not killed are printed, from mutmut's own output.

    python tools/mutation.py                                   # every file in [tool.mutmut]
    python tools/mutation.py --only runtime/preprocess.py      # one file, its own scratch folder
    python tools/mutation.py --only runtime/session.py --jobs 1 --dir build/mut-session

A mutant that survives changed the code and no test noticed: either a test is missing, or the
change cannot be observed (an equivalent mutant); docs/MUTATION.md explains the ones we keep.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folders as installed: the CLI folder is the package root, the others its subpackages.
LAYOUT = {"cli": "cifar10kit", "runtime": "cifar10kit/runtime", "export": "cifar10kit/export",
          "train": "cifar10kit/train", "gui": "cifar10kit/gui"}  # fmt: skip


def assemble(scratch: Path) -> None:
    """A fresh scratch folder holding the package as installed, the tests and pyproject.toml."""
    shutil.rmtree(scratch, ignore_errors=True)
    for src, dst in LAYOUT.items():
        shutil.copytree(ROOT / src, scratch / dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", scratch / "pyproject.toml")


def restrict(scratch: Path, only: list[str]) -> None:
    """Mutate only these repository files (e.g. runtime/preprocess.py) instead of the whole list."""
    targets = []
    for name in only:
        top, _, rest = name.partition("/")
        if top not in LAYOUT or not (ROOT / name).is_file():
            raise SystemExit(f"--only {name}: not a source file of this repository (e.g. runtime/preprocess.py)")
        targets.append(f"{LAYOUT[top]}/{rest}")
    toml = scratch / "pyproject.toml"
    text = toml.read_text()
    text, n = re.subn(r"(?ms)^only_mutate = \[.*?\]", "only_mutate = " + json.dumps(targets), text)
    if n != 1:
        raise SystemExit("pyproject.toml: [tool.mutmut] has no only_mutate list to restrict")
    toml.write_text(text)


def mutmut(scratch: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=scratch, text=True, capture_output=capture)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=[], help="repository files to mutate (default: all listed)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: build/mutation[-NAME])")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel")
    args = parser.parse_args()

    suffix = "-" + Path(args.only[0]).stem if len(args.only) == 1 else ""
    scratch = (args.dir or ROOT / "build" / f"mutation{suffix}").resolve()
    assemble(scratch)
    if args.only:
        restrict(scratch, args.only)

    mutmut(scratch, "run", "--max-children", str(args.jobs))
    results = mutmut(scratch, "results", capture=True).stdout
    left = [line.strip() for line in results.splitlines() if line.strip() and not line.endswith(": killed")]
    mutmut(scratch, "export-cicd-stats", capture=True)
    stats = json.loads((scratch / "mutants" / "mutmut-cicd-stats.json").read_text())
    print("\nnot killed:" if left else "\nevery mutant was killed")
    print("\n".join(f"  {line}" for line in left))
    print(json.dumps(stats, indent=2))
    total = stats["total"]
    if total:
        print(f"mutation score: {stats['killed']}/{total} killed = {stats['killed'] / total:.1%}  ({scratch})")


if __name__ == "__main__":
    main()
