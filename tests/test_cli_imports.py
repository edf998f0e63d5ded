"""What the `tripletlab` command imports: users' modules from the current directory (local workers
too), never a user's module in place of ours, nothing heavy for --help; --version and "did you mean"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tripletlab import __version__, imports
from tripletlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
USER_DATA = '''
import numpy as np


def load():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 12)
    return (rng.normal(size=(120, 6)) + y[:, None]).astype("float32"), y
'''


def test_run_imports_a_plugin_from_the_current_directory_in_its_local_workers(tmp_path, monkeypatch, capsys):
    # each worker gets this process's sys.path, but the fork server (started by the first pool of
    # this process) imports ablations.train & co. with the sys.path it starts with: a relative
    # PYTHONPATH (`PYTHONPATH=.`) must not be read from the directory this test moves to
    pythonpath = os.environ.get("PYTHONPATH")
    if pythonpath:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(map(os.path.abspath, pythonpath.split(os.pathsep))))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd_plugin_data.py").write_text(USER_DATA)
    (tmp_path / "grid.toml").write_text('[base]\ndataset = "cwd_plugin_data:load"\nepochs = 1\n'
                                        'eval_every = 1\nsampler_p = 3\nsampler_k = 4\n'
                                        '[grid]\nseed = [0, 1]\n')
    before = list(sys.path)
    assert str(tmp_path) not in sys.path
    assert main(["run", "grid.toml", "--out", "store", "--workers", "2"]) == 0, capsys.readouterr().err
    runs = pd.read_parquet(tmp_path / "store" / "runs.parquet")
    assert set(runs["status"]) == {"finished"}, runs["error"].tolist()
    assert (runs["dataset"] == "cwd_plugin_data:load").all() and len(runs) == 2 + 6  # + raw, lda, nca, pca_whiten, untrained x 2
    assert sys.path == before  # the current directory is on sys.path for the command only


def test_a_plugin_that_does_not_import_says_where_it_must_be(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.toml").write_text('[base]\ndataset = "not_there_mod:load"\n')
    assert main(["run", "grid.toml", "--out", "store"]) == 2
    err = capsys.readouterr().err
    assert "not_there_mod" in err and "current directory" in err and "every worker" in err


@pytest.mark.parametrize("shadow", ["losses.py", "ablations/__init__.py", "reports.py"])
def test_a_users_module_in_the_current_directory_shadowing_ours_is_an_error_naming_it(
        tmp_path, monkeypatch, capsys, shadow):
    monkeypatch.chdir(tmp_path)
    (tmp_path / shadow).parent.mkdir(exist_ok=True)
    (tmp_path / shadow).write_text("x = 1\n")
    (tmp_path / "grid.toml").write_text("[base]\nepochs = 1\n")
    assert main(["run", "grid.toml", "--out", "store", "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    name = shadow.split("/")[0].removesuffix(".py")
    assert line.startswith("tripletlab run: error: ")
    assert str(tmp_path / name) in line and f"package {name!r}" in line and "current directory" in line
    assert "rename or move it" in line


def test_a_copy_of_our_package_is_no_shadow_unless_its_code_differs(tmp_path, monkeypatch, capsys):
    """The checkout a wheel was installed from, as the current directory: the same code is fine."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "reports", tmp_path / "reports", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "grid.toml").write_text("[base]\nepochs = 1\n")
    assert main(["run", "grid.toml", "--out", "store", "--dry-run"]) == 0, capsys.readouterr().err
    with open(tmp_path / "reports" / "html.py", "a") as edited:
        edited.write("\n# edited\n")
    assert main(["run", "grid.toml", "--out", "store", "--dry-run"]) == 2
    assert f"{tmp_path / 'reports'} shadows tripletlab's package 'reports'" in capsys.readouterr().err


def test_a_module_on_pythonpath_shadowing_ours_is_an_error_for_every_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "reports.py").write_text("x = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "reports.py") in err and "PYTHONPATH" in err


def test_nothing_shadows_ours_in_the_checkout():
    assert imports.shadowing() is None


def test_help_and_version_import_neither_torch_nor_pandas_nor_our_packages():
    code = ("import sys\nfrom tripletlab.cli import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit as exit:\n        assert exit.code == 0\n"
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'losses', 'ablations', 'reports') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *_, imported = done.stdout.strip().splitlines()
    assert imported == "[]"
    assert f"tripletlab {__version__}" in done.stdout


@pytest.mark.parametrize("argv, wrong, suggestion, listed", [
    (["rn"], "rn", "run", "'run', 'report', 'migrate', 'check'"),
    (["reprot", "x"], "reprot", "report", "'run', 'report', 'migrate', 'check'"),
    (["check", "m:f", "--as", "batch_hrd"], "batch_hrd", "batch_hard", "'semi_hard_tf'"),
])
def test_a_misspelt_command_or_variant_is_an_error_with_did_you_mean(argv, wrong, suggestion, listed, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    *_, err = capsys.readouterr().err.strip().splitlines()
    assert f"invalid choice: {wrong!r}; did you mean {suggestion!r}? (choose from " in err and listed in err


def test_a_misspelt_key_or_value_says_did_you_mean_and_lists_no_internal_key(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text("[base]\nepoch = 1\n")
    assert main(["run", str(grid), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'epoch'; did you mean 'epochs'" in err and "valid keys: dataset, " in err
    listed = err.split("valid keys: ")[1].strip().split(", ")
    assert "eval_every" in listed and "data_fingerprint" not in listed and "fold" not in listed
    grid.write_text('[grid]\nloss = ["batch_hrd"]\n')
    assert main(["run", str(grid), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    assert "did you mean 'batch_hard'" in capsys.readouterr().err
