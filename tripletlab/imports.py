"""Where the `tripletlab` command imports from: users' modules from the current directory, ours from the package.

`tripletlab run` and `tripletlab check` import the pieces a user names ("mypkg.data:load")
from the directory the command runs in, as `python -m` would: `cwd_on_path()` puts it first
on sys.path for the command (multiprocessing gives local worker processes the same sys.path;
Dask workers import from their own environment).

The price of that rule is that a user's `losses.py` (or `ablations/`, `reports.py`,
`tripletlab.py`) there, or on PYTHONPATH, would be imported instead of ours (by the
command, and by local workers: the fork server starts with the current directory first).
`shadowing()` finds such a module before anything of ours is imported from it, and names
the file. A copy of our package with the same code (the checkout an installed wheel was
built from) is no shadow.

Standard library only: this module runs before `--help` has printed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

PACKAGES = ("losses", "ablations", "reports", "tripletlab")
# the directory holding our packages: site-packages once installed, the checkout in development
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def cwd_on_path() -> Iterator[str]:
    """The current directory first on sys.path while the block runs (sys.path restored after); yields it."""
    cwd = os.getcwd()
    before = list(sys.path)
    sys.path.insert(0, cwd)
    try:
        yield cwd
    finally:
        sys.path[:] = before


def _location(spec: ModuleSpec | None) -> Path | None:
    """A module's spec -> its file (a package: its directory), None for no spec or no file."""
    if spec is None:
        return None
    if spec.origin not in (None, "namespace", "built-in", "frozen"):
        origin = Path(spec.origin)
        return origin.parent if origin.name == "__init__.py" else origin
    locations = list(spec.submodule_search_locations or ())
    return Path(locations[0]) if locations else None


def _found(name: str) -> list[Path]:
    """Every place `name` is or would be imported from: this process's module, and sys.path's first
    match (what a worker process, which imports afresh, gets)."""
    module = sys.modules.get(name)
    specs = [getattr(module, "__spec__", None) if module is not None else importlib.util.find_spec(name),
             PathFinder.find_spec(name, sys.path)]
    return [path for path in map(_location, specs) if path is not None]


def _where(path: Path) -> str:
    """A shadowing file -> how it got onto sys.path and what to do, in words."""
    parent = str(path.parent)
    if parent == os.getcwd():
        return ("it is in the current directory, which `tripletlab run` and `check` import your modules "
                "from: rename or move it, or run tripletlab from another directory")
    if parent in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        return "its directory is on PYTHONPATH: rename it, or take its directory off PYTHONPATH"
    return "its directory is on sys.path ahead of the package: rename it, or take its directory off sys.path"


def _sources(package: Path) -> dict[str, bytes]:
    """A package directory -> {relative path: bytes} of its .py files."""
    return {p.relative_to(package).as_posix(): p.read_bytes() for p in package.rglob("*.py")
            if "__pycache__" not in p.parts}


def _same_code(path: Path, ours: Path) -> bool:
    """Whether `path` is our package or a copy of it, the same .py files byte for byte (the
    checkout the installed wheel was built from, when it is the current directory)."""
    path = path.resolve()
    return path == ours or (path.is_dir() and ours.is_dir() and _sources(path) == _sources(ours))


def shadowing(packages: tuple[str, ...] = PACKAGES) -> str | None:
    """None when each of `packages` resolves to ours (ROOT / name, or the same code elsewhere); else
    a one-line message naming the first module that shadows one of them and what to do."""
    for name in packages:
        ours = ROOT / name
        for path in _found(name):
            if not _same_code(path, ours):
                return f"{path} shadows tripletlab's package {name!r} ({ours}); {_where(path)}"
    return None
