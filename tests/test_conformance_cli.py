"""`tripletlab check` as users call it: exit 2 with one line when nothing can be checked, --kw, --timeout,
--json, --help, import by path, a shadowed `losses`, a closed pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from losses.testing import VARIANT_NAMES, check_loss
from losses.testing.targets import DEFAULT_REDUCTION
from tripletlab import check as check_command
from tripletlab.cli import main

GOOD = """
import losses
def ba(x, y, margin=0.2):
    return losses.batch_all_triplet_loss(x, y, margin=margin, metric="euclidean")
def one_argument(x):
    return x.sum()
class Loss:
    def __call__(self, x, y, margin=0.2):
        return ba(x, y, margin)
def hangs(x, y, margin=0.2):
    while True:
        pass
def nan(x, y, margin=0.2):
    return x.sum() * float("nan")
def flag(x, y, margin=0.2, squared=False):
    return losses.batch_all_triplet_loss(x, y, margin=margin, metric="squared_euclidean" if squared else "euclidean")
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch, request):
    name = f"user_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path, name


def _check(capsys, *argv):
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_parser_constants_equal_the_checker_s():
    assert check_command.VARIANTS == VARIANT_NAMES
    assert check_command.DEFAULT_REDUCTIONS == DEFAULT_REDUCTION


@pytest.mark.parametrize("attr, words", [
    ("one_argument", "cannot be called as batch_all"),
    ("Loss", "is a class (Loss); pass an instance"),
    ("nothing_here", "has no attribute 'nothing_here'"),
])
def test_what_cannot_be_called_as_the_variant_exits_2_with_one_line(user_dir, capsys, attr, words):
    _, name = user_dir
    code, out, err = _check(capsys, f"{name}:{attr}", "--as", "batch_all")
    assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1, err


def test_check_loss_refuses_a_class_and_a_wrong_signature():
    class Loss:
        def __call__(self, x, y, margin):
            return x.sum()

    with pytest.raises(ValueError, match="is a class"):
        check_loss(Loss, as_="batch_all")
    with pytest.raises(ValueError, match="cannot be called as naive"):
        check_loss(lambda x, y, margin: x.sum(), as_="naive")


@pytest.mark.parametrize("body, words", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
    ("import os\nos._exit(0)\n", "ended the process with status 0"),
    ("raise ImportError('no torch here')\n", "cannot import"),
])
def test_a_module_that_exits_or_fails_at_import_is_not_a_pass(tmp_path, monkeypatch, capsys, body, words):
    name = f"exits_{abs(hash(body))}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.chdir(tmp_path)
    code, out, err = _check(capsys, f"{name}:f", "--as", "batch_all")
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_files_by_path_and_a_shadowed_losses_module(user_dir, capsys):
    path, name = user_dir
    (path / "sub").mkdir()
    (path / "sub" / "mine.py").write_text(textwrap.dedent(GOOD))
    assert _check(capsys, f"./{name}.py:ba", "--as", "batch_all")[0] == 0
    assert _check(capsys, "sub/mine.py:ba", "--as", "batch_all")[0] == 0
    code, _, err = _check(capsys, "sub/none.py:ba", "--as", "batch_all")
    assert code == 2 and "no such file" in err
    (path / "losses.py").write_text("def f(x, y):\n    return x.sum()\n")
    code, _, err = _check(capsys, "losses:f", "--as", "batch_all")
    # the command refuses before importing anything of ours: the file would shadow our package
    assert code == 2 and "shadows tripletlab's" in err and str(path / "losses.py") in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kw, code, words", [
    ("squared={not json", 2, "not valid JSON"),
    ("squared=False", 2, "write false"),
    ("squared=false", 0, ""),
    ("squared=true", 1, "squared distance where euclidean was asked"),
])
def test_kw_values_are_json(user_dir, capsys, kw, code, words):
    _, name = user_dir
    got, out, err = _check(capsys, f"{name}:flag", "--as", "batch_all", "--kw", kw)
    assert got == code and words in out + err


def test_timeout_stops_a_hanging_pure_python_loop(user_dir, capsys):
    _, name = user_dir
    code, out, err = _check(capsys, f"{name}:hangs", "--as", "batch_all", "--timeout", "0.5")
    assert code == 2 and "--timeout 0.5 s reached" in err and len(err.strip().splitlines()) == 1


def test_json_is_valid_with_nan_values(user_dir, capsys):
    _, name = user_dir
    code, out, _ = _check(capsys, f"{name}:nan", "--as", "batch_all", "--json")
    assert code == 1 and ": NaN" not in out
    data = json.loads(out)
    assert data["results"][0]["value"] is None and data["results"][0]["problem"] == "non-finite value"


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: 0.2)" in out and "(default: euclidean)" in out and "batch_all mean_positive" in out


def test_a_closed_pipe_is_not_an_error(tmp_path):
    proc = subprocess.Popen([sys.executable, "-P", "-m", "tripletlab", "check", "tests.conformance_gallery:"
                             "mean_over_all_triplets", "--as", "batch_all"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(tmp_path), env={**__import__("os").environ,
                                                                            "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    proc.stdout.close()  # like `| head -0`: every write fails with EPIPE
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and b"Broken pipe" not in err and b"Traceback" not in err, err


def test_progress_is_reported_for_slow_functions(monkeypatch, capsys):
    progress = check_command._Progress("slow:f")
    monkeypatch.setattr(progress, "start", progress.start - 5)
    progress(3, 16, "random labels")
    progress.done()
    err = capsys.readouterr().err
    assert "case 3/16 (random labels)" in err and "done in" in err


def test_timeout_stops_a_module_that_sleeps_at_import_and_its_import_process(tmp_path):
    """The import is first tried in a forked child: --timeout ends the command and that child."""
    (tmp_path / "sleeps.py").write_text("import os, pathlib, time\n"
                                        "pathlib.Path('pid').write_text(str(os.getpid()))\n"
                                        "time.sleep(600)\n"
                                        "def f(x, y, margin=0.2):\n    return x.sum()\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "tripletlab", "check", "sleeps:f", "--as", "batch_all",
                           "--timeout", "1"], capture_output=True, text=True, cwd=str(tmp_path), env=env,
                          timeout=300)  # a child left holding the pipes would keep it open for 600 s
    assert proc.returncode == 2 and "--timeout 1 s reached" in proc.stderr and proc.stdout == "", proc.stderr
    pid = int((tmp_path / "pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"the import child {pid} outlived the command")


@pytest.mark.parametrize("body, words", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
    ("import os\nos._exit(0)\n", "ended the process with status 0"),
])
@pytest.mark.parametrize("how", ["module", "path"])
def test_an_exit_at_import_is_exit_2_as_a_command(tmp_path, body, words, how):
    (tmp_path / "leaves.py").write_text(body)
    target = "leaves:f" if how == "module" else "./leaves.py:f"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "tripletlab", "check", target, "--as", "batch_all"],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 2 and words in proc.stderr and proc.stdout == "", proc.stderr


@pytest.mark.parametrize("call, words", [("os._exit(0)", "os._exit(0) called"), ("sys.exit(0)", "SystemExit: 0")])
def test_a_function_that_ends_the_process_does_not_conform(tmp_path, call, words):
    (tmp_path / "ends.py").write_text(f"import os, sys\ndef f(x, y, margin=0.2):\n    {call}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "tripletlab", "check", "ends:f", "--as", "batch_all"],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 1 and "does NOT conform" in proc.stdout and words in proc.stdout, proc.stdout
