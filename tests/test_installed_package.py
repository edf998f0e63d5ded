"""The package as a user installs it: build the wheel, install it into a fresh virtualenv, use it
from a directory outside the checkout, with the checkout on no path.

The editable install of `make setup` serves every package from the checkout, so only an
installed wheel shows a subpackage left out of it (as `losses.testing` once was). To stay
fast, the fresh virtualenv gets the dependencies (torch, pandas, ...) through a .pth file
naming the running interpreter's site-packages: a path line there adds that directory to
sys.path without running the .pth files in it, so the editable install's finder stays out
and `losses` imports from the wheel (asserted below). The wheel itself is installed with
`pip --python VENV install --no-deps` before the .pth exists, so pip sees no other
tripletlab distribution.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("losses", "ablations", "reports", "tripletlab")
# what a wheel is built from: the checkout without its environment, caches and build output
# (setuptools' build/ keeps files of deleted modules; the copy starts clean)
NOT_SOURCE = (".git", ".venv", "results", "build", "dist", "*.egg-info", "__pycache__",
              ".pytest_cache", ".benchmarks", ".hypothesis")
GRID = """
[base]
dataset = "userdata:load"   # the user's module, in the directory the command runs from
epochs = 1
eval_every = 1
sampler_p = 4
sampler_k = 8

[grid]
loss = ["batch_hard"]
"""
USER_DATA = '''
from sklearn.datasets import load_digits


def load():
    digits = load_digits()
    return digits.data.astype("float32"), digits.target
'''


def _run(cmd: list, *, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    start = time.monotonic()
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    print(f"{time.monotonic() - start:6.1f} s  {' '.join(map(str, cmd[:4]))}")  # shown with -s or on failure
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _our_packages() -> set[str]:
    """Every package directory (with __init__.py) of ours in the checkout, as wheel paths."""
    return {str(init.relative_to(ROOT).as_posix()) for name in OURS
            for init in (ROOT / name).rglob("__init__.py") if "__pycache__" not in init.parts}


def _clean_env() -> dict:
    """The environment without anything that puts the checkout or the shared venv first."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "PATH": os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                    if not p.startswith(sys.prefix))}


@pytest.mark.slow
def test_the_wheel_installs_and_runs_a_grid_from_outside_the_checkout(tmp_path):
    env = _clean_env()

    # the wheel, from a clean copy of the checkout, with the build tools of this environment
    src, dist = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--quiet", "-w", dist, src], cwd=tmp_path, env=env)
    (wheel,) = dist.glob("tripletlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "losses/testing/__init__.py" in names
    assert _our_packages() <= names, _our_packages() - names
    grids = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ablations" / "grids").glob("*.toml")}
    assert grids and grids <= names
    assert not {n for n in names if n.startswith(("tests/", "benchmarks/"))}

    # a fresh virtualenv: the wheel installed into it, the dependencies through a .pth file
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env)
    python, tripletlab = venv / "bin" / "python", venv / "bin" / "tripletlab"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--quiet", wheel], cwd=tmp_path, env=env)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path, env=env).stdout.strip())
    shared = {sysconfig.get_path(kind, vars={"base": sys.prefix, "platbase": sys.prefix})
              for kind in ("purelib", "platlib")}
    (site / "_tripletlab_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(shared)))

    work = tmp_path / "work"  # the user's directory, outside the checkout
    work.mkdir()
    # where each of ours imports from (found, not imported: `check --help` below imports
    # losses.testing from there)
    where = _run([python, "-c", "import sys, importlib.util as u; "
                  f"print(*(u.find_spec(n).origin for n in {OURS!r})); print(*sys.path, sep='\\n')"],
                 cwd=work, env=env).stdout
    files, *path = where.splitlines()
    assert len(files.split()) == len(OURS) and all(Path(f).is_relative_to(site) for f in files.split()), files
    assert ROOT not in {Path(p or work).resolve() for p in path}, path  # the checkout is on no path

    helped = _run([tripletlab, "--help"], cwd=work, env=env).stdout
    assert all(name in helped for name in ("run", "report", "check"))
    from tripletlab import __version__

    assert _run([tripletlab, "--version"], cwd=work, env=env).stdout.strip() == f"tripletlab {__version__}"
    assert "--as" in _run([tripletlab, "check", "--help"], cwd=work, env=env).stdout

    # a one-run grid whose dataset is the user's module beside it (local worker processes get
    # the same sys.path: tests/test_cli_imports.py)
    (work / "userdata.py").write_text(USER_DATA)
    (work / "grid.toml").write_text(GRID)
    _run([tripletlab, "run", "grid.toml", "--out", "store", "--workers", "1"], cwd=work, env=env)
    runs = pd.read_parquet(work / "store" / "runs.parquet")
    assert set(runs["status"]) == {"finished"}
    assert set(runs["baseline"]) == {"", "raw", "untrained", "lda", "nca", "pca_whiten"}
    reported = _run([tripletlab, "report", "store"], cwd=work, env=env)
    assert (work / "store" / "report" / "report.html").is_file(), reported.stdout

    # from the checkout the wheel was built from (its packages are the same code): no shadow
    dry = _run([tripletlab, "run", "ablations/grids/smoke.toml", "--out", tmp_path / "s", "--dry-run"],
               cwd=src, env=env)
    assert " runs" in dry.stdout.splitlines()[0], dry.stdout

    # a user's losses.py beside the grid: one line naming it, exit 2, nothing run
    (work / "losses.py").write_text("x = 1\n")
    shadowed = subprocess.run([str(tripletlab), "run", "grid.toml", "--out", "store2"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=120)
    assert shadowed.returncode == 2, shadowed.stderr
    (line,) = shadowed.stderr.strip().splitlines()
    assert str(work / "losses.py") in line and "rename" in line
    assert not (work / "store2").exists()
