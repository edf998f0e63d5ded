"""The results store of a grid: one directory, atomic writes, resumable.

Layout (the contract with reports/, see ARCHITECTURE.md):

    DIR/store.json                  {"store_format": N}: the format of the store and its run ids
    DIR/grid.toml                   the grid file that created the store
    DIR/runs/<run_id>/config.json   resolved config + run_id
    DIR/runs/<run_id>/steps.parquet, epochs.parquet, embeddings.npz
    DIR/runs/<run_id>/result.json   written LAST: its presence means the run is done
    DIR/runs.parquet, steps.parquet, epochs.parquet   consolidated

Every file is written to a temporary name in the same directory and renamed
over the target (`os.replace`), so a kill at any moment leaves either the old
file or the new one. The consolidated tables are a cache of the per-run files:
`runs()`, `steps()` and `epochs()` add any finished run the cache misses
(e.g. after a kill), so the store is always readable and complete.

The store heals (a `StoreWarning` names each damaged file, never a raw parser
error): a consolidated table that is missing or unreadable is rebuilt from the
run folders; a run whose result.json, config.json or per-run table cannot be
read counts as missing, so the next `run_grid` runs it again.

A store of an older format (no store.json, but run folders) is refused for writing
until ablations/migrate.py has rewritten it (`open_store` does it on first open).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations.config import DEFAULTS, FIELDS, STORE_FORMAT, stored_config_hash
from ablations.data import not_an_npz

METRIC_COLUMNS = [f"{split}_{m}" for split in ("val", "test")
                  for m in ("precision_at_1", "r_precision", "map_at_r", "nmi", "recall_at_1",
                            "recall_at_2", "recall_at_4", "recall_at_8")]
RUN_COLUMNS = (["run_id", *FIELDS, "status", "error", "diverged_step", "diverged_component",
                "wall_time_s", "train_time_s", *METRIC_COLUMNS])
# added beside the contract's columns (process CPU seconds: independent of machine load;
# a classical baseline's chosen hyper-parameters and its candidates' validation MAP@R, JSON
# text, null for other runs: ablations/baselines.py)
EXTRA_RUN_COLUMNS = ["cpu_time_s", "train_cpu_time_s", "baseline_params", "baseline_candidates"]
# statuses that are a run's final outcome; "failed" runs are retried on the next run_grid
DONE_STATUSES = ("finished", "diverged")
STATUSES = ("finished", "diverged", "failed")
# per-run files that must be readable for a run to count as stored (result.json aside)
RUN_FILES = ("config.json", "steps.parquet", "epochs.parquet")
SOURCE_FILE = "grid_source.json"  # where the grid file of grid.toml lives (resolved path), and the earlier ones
FORMAT_FILE = "store.json"  # {"store_format": STORE_FORMAT} (ablations/config.py)
RUN_ID = re.compile(r"[0-9a-f]{12}")  # a run folder's name: its config's hash (config_hash)
# the files the store writes (atomic_write_bytes: temporary ".<name>.<8 random>.tmp" beside them)
ROOT_FILES = re.compile(r"grid(\.\d+)?\.toml|grid_source\.json|(runs|steps|epochs)\.parquet"
                        r"|write-probe|store\.json|migration\.json")
RUN_DIR_FILES = re.compile(r"config\.json|result\.json|(steps|epochs)\.parquet|embeddings\.npz")
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's random part
_UMASK_LOCK = threading.Lock()


class StoreWarning(UserWarning):
    """A damaged store file that was worked around (rebuilt, or its run counted as missing)."""


def _read_json(path: Path) -> Any:
    """JSON file -> object; ValueError naming the file when it is not readable JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not readable JSON ({err})") from err


def _read_parquet(path: Path) -> pd.DataFrame:
    """parquet file -> DataFrame; ValueError naming the file when it cannot be read."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{str(path)!r} is not a readable parquet file ({err})") from err


def is_store(root: str | Path) -> bool:
    """Whether the directory `root` holds a results store (runs/, grid.toml or store.json)."""
    root = Path(root)
    return root.is_dir() and any((root / name).exists() for name in ("runs", "grid.toml", FORMAT_FILE))


def store_format(root: str | Path) -> int | None:
    """The store format of the store at `root`: its store.json's, else 1 when runs/ holds a
    run folder (a store older than the file), else None (no store yet, or an empty one)."""
    root = Path(root)
    path = root / FORMAT_FILE
    if path.is_file():
        found = _read_json(path)
        if not isinstance(found, dict) or not isinstance(found.get("store_format"), int):
            raise ValueError(f"{str(path)!r} holds no store format (expected "
                             f'{{"store_format": {STORE_FORMAT}}})')
        return found["store_format"]
    runs = root / "runs"
    if runs.is_dir() and any(RUN_ID.fullmatch(d.name) for d in runs.iterdir()):
        return 1
    return None


def check_out_dir(path: str | Path, *, what: str) -> Path:
    """ValueError naming `path` when it is not, and cannot become, a writable directory;
    creates nothing (a dry run's check). `what` names the argument (e.g. "--out")."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == path else f"is under the file {str(parent)!r}"
                raise ValueError(f"{what} {str(path)!r} {where}; expected a directory "
                                 f"(existing or to be created)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{what} {str(path)!r} is not a writable directory (no write "
                                 f"permission on {str(parent)!r}); choose another directory")
            break
    return path


def ensure_writable_dir(path: str | Path, *, what: str) -> Path:
    """Create directory `path` when needed; ValueError naming it when it cannot hold files.

    `what` names the argument in the message (e.g. "--out").
    """
    path = check_out_dir(path, what=what)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r} is not a writable directory "
                         f"({err.strerror or err}); choose another directory") from err
    return path


def _file_mode() -> int:
    """The mode a plain new file gets under this process's umask (0o644 under 0o022)."""
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and os.replace.

    The file gets the mode of any new file under the umask (mkstemp's 0600 would
    hide a shared store from its group).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.replace(tmp, path)
        except OSError as err:  # e.g. a directory put where the file is: name it, not tmp
            raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=True).encode())


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


class ResultsStore:
    """Read and write the results store at `root` (created on first write)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.written: Counter[str] = Counter()  # statuses of the runs written through this object
        self._warned: set[str] = set()
        self._json_cache: dict[Path, tuple[tuple[int, int], Any]] = {}

    # ------------------------------------------------------------------ grid
    def grid_text(self) -> str | None:
        """The grid file that created the store, or None for an empty directory."""
        path = self.root / "grid.toml"
        if not path.is_file():
            return None
        try:
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{str(path)!r} is not UTF-8 text ({err.reason} at byte "
                             f"{err.start}); restore it from the grid file the store was made "
                             f"from") from err

    def grid_source(self) -> str | None:
        """Resolved path of the grid file grid.toml was copied from (None: not recorded)."""
        history = self.grid_history()
        return history[-1] if history else None

    def grid_history(self) -> list[str]:
        """Resolved paths of the grid files the store was made from, then extended with, in
        order (the last is grid.toml's); [] when not recorded."""
        path = self.root / SOURCE_FILE
        try:
            record = _read_json(path) if path.is_file() else {}
            history = [str(p) for p in record.get("history", [])]
            latest = str(record["path"]) if "path" in record else None
        except (ValueError, TypeError, AttributeError):
            return []
        if latest is not None and (not history or history[-1] != latest):
            history.append(latest)  # a store made before the history was kept
        return history

    def claim(self, grid_text: str, *, grid_name: str = "the grid file", extend: bool = False,
              grid_path: str | Path | None = None) -> None:
        """Bind the store to `grid_text`; refuse a store made by another grid file unless `extend`.

        The grid file the store was made from (`grid_path`, recorded in
        grid_source.json) may be edited freely (new axis values, a comment): its new
        text replaces grid.toml. Any other grid file needs `extend=True`. Either way
        the previous text is kept as grid.<n>.toml and the new grid's runs are added
        beside the existing ones. Raises ValueError when `root` cannot be a store
        directory (a file, under a file, not writable).
        """
        self.check_claim(grid_text, grid_name=grid_name, extend=extend, grid_path=grid_path)
        ensure_writable_dir(self.root, what="--out")
        found = store_format(self.root)
        if found != STORE_FORMAT:
            if found is not None:
                fix = (f"run `tripletlab migrate {self.root}` first" if found < STORE_FORMAT
                       else "upgrade tripletlab to write to it")
                raise ValueError(f"store {str(self.root)!r} is of store format {found}, this "
                                 f"tripletlab writes format {STORE_FORMAT}; {fix}")
            atomic_write_json(self.root / FORMAT_FILE, {"store_format": STORE_FORMAT})
        old = self.grid_text()
        source = str(Path(grid_path).resolve()) if grid_path is not None else None
        if old is not None and old != grid_text:
            n = 1
            while (self.root / f"grid.{n}.toml").exists():
                n += 1
            atomic_write_bytes(self.root / f"grid.{n}.toml", old.encode("utf-8"))
        if old != grid_text:
            atomic_write_bytes(self.root / "grid.toml", grid_text.encode("utf-8"))
        # grid.toml's file: recorded when the text is (re)written, or by an older store's
        # first run with its own text; the same text from elsewhere does not move it
        if source is not None and (old != grid_text or self.grid_source() is None):
            history = self.grid_history()
            history += [source] if history[-1:] != [source] else []
            atomic_write_json(self.root / SOURCE_FILE, {"path": source, "history": history})
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()

    def check_claim(self, grid_text: str, *, grid_name: str = "the grid file",
                    extend: bool = False, grid_path: str | Path | None = None) -> None:
        """ValueError when `claim` with these arguments would refuse the store; reads only."""
        check_out_dir(self.root, what="--out")
        if not self.root.is_dir():
            return  # a new store
        self.check_layout()
        old = self.grid_text()
        source = str(Path(grid_path).resolve()) if grid_path is not None else None
        same_file = source is not None and source == self.grid_source()
        if old is not None and old != grid_text and not (extend or same_file):
            history = self.grid_history()
            by = (" (or by an earlier text of it: this store predates grid_source.json)"
                  if not history else f" ({history[0]})" if len(history) == 1 else
                  f" ({history[0]}) and extended with {', '.join(history[1:])} (grid.toml "
                  f"holds the last)")
            raise ValueError(
                f"store {str(self.root)!r} was created by a different grid file{by}; "
                f"to add the runs of {grid_name} to it, run again with --extend "
                f"(run_grid(..., extend=True)), or choose another --out directory")

    def check_layout(self, *, files: bool = True) -> None:
        """ValueError naming a store entry of the wrong kind: runs/ a file, or (`files`) a
        file the store writes, e.g. runs.parquet, a directory."""
        if self.runs_dir.exists() and not self.runs_dir.is_dir():
            raise ValueError(f"{str(self.runs_dir)!r} is a file, but a results store keeps its "
                             f"runs in a directory of that name; move the file away or choose "
                             f"another --out directory")
        for name in ("grid.toml", SOURCE_FILE, "runs.parquet", "steps.parquet", "epochs.parquet"):
            path = self.root / name
            if files and path.exists() and not path.is_file():
                raise ValueError(f"{str(path)!r} is a directory, but the results store writes a "
                                 f"file of that name; move it away (the store rebuilds its "
                                 f"tables from runs/) or choose another --out directory")

    def _remove_temporaries(self) -> None:
        """Delete the temporary files a killed writer of this store left (atomic_write_bytes).

        Only ".<name>.<random>.tmp" of a file the store writes, in the store's root
        and its run folders: --out may be any directory, and a user's files stay.
        """
        places = [(self.root, ROOT_FILES)]
        if self.runs_dir.is_dir() and not self.runs_dir.is_symlink():
            places += [(d, RUN_DIR_FILES) for d in self.runs_dir.iterdir()
                       if RUN_ID.fullmatch(d.name) and d.is_dir() and not d.is_symlink()]
        for place, names in places:
            for tmp in place.glob(".*.tmp"):
                match = _TEMPORARY.fullmatch(tmp.name)
                if match and names.fullmatch(match["name"]) and tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ runs
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per store object and file
            self._warned.add(message)
            warnings.warn(message, StoreWarning, stacklevel=3)

    def _cached_json(self, path: Path) -> Any:
        """Parsed JSON file, re-read only when its size or mtime changes."""
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        hit = self._json_cache.get(path)
        if hit is None or hit[0] != key:
            hit = (key, _read_json(path))
            self._json_cache[path] = hit
        return hit[1]

    def result(self, run_id: str) -> dict | None:
        """The run's result.json, or None when the run has not finished or cannot be read.

        An unreadable run (damaged result.json, config.json or per-run table) is
        missing: a StoreWarning names the file, and the next run_grid runs it again.
        """
        d = self.run_dir(run_id)
        path = d / "result.json"
        try:
            result = self._cached_json(path)
            if not isinstance(result, dict) or result.get("status") not in STATUSES:
                raise ValueError(f"{str(path)!r} holds no run status "
                                 f"(expected one of {', '.join(STATUSES)})")
            config = self._cached_json(d / "config.json")
            if not isinstance(config, dict):
                raise ValueError(f"{str(d / 'config.json')!r} is not a JSON object")
            if config.get("run_id") != run_id or stored_config_hash(config) != run_id:
                raise ValueError(
                    f"{str(d / 'config.json')!r} is not the config of run {run_id} (its run_id "
                    f"is {config.get('run_id')!r}, its keys hash to {stored_config_hash(config)}): "
                    f"a copied, renamed or hand-made folder")
            for name in RUN_FILES[1:]:
                if not (d / name).is_file():
                    raise ValueError(f"{str(d / name)!r} is missing")
        except FileNotFoundError as err:
            if not path.is_file():
                return None
            self._warn(f"run {run_id}: {err.filename!r} is missing; the run counts as missing "
                       f"and is run again by the next `tripletlab run`")
            return None
        except (ValueError, OSError) as err:  # OSError: e.g. a directory named result.json
            if isinstance(err, OSError):
                err = f"{err.filename!r} cannot be read ({err.strerror or err})"
            self._warn(f"run {run_id}: {err}; the run counts as missing and is run again by "
                       f"the next `tripletlab run`")
            return None
        return result

    def _result_ids(self) -> list[str]:
        """run_ids with a result.json file (readable or not), sorted.

        Only real folders named by a run id count: a copy (runs/<id>.bak), a
        symbolic link or any other entry of runs/ is ignored with a StoreWarning
        naming it, so no run is read twice.
        """
        if not self.runs_dir.is_dir():
            return []
        ids = []
        for entry in sorted(self.runs_dir.iterdir()):
            if entry.is_symlink():
                self._warn(f"{str(entry)!r} is a symbolic link; ignored (a run is read from its "
                           f"own folder only, never twice)")
            elif not RUN_ID.fullmatch(entry.name) or not entry.is_dir():
                if entry.name.startswith(".") and entry.is_file():
                    continue  # a hidden file (e.g. a desktop's metadata): not a run
                self._warn(f"{str(entry)!r} is not a run folder (runs/ holds only folders named "
                           f"by a 12-hex-digit run id); ignored")
            elif (entry / "result.json").exists() or (entry / "result.json").is_symlink():
                ids.append(entry.name)
        return ids

    def stored_ids(self) -> list[str]:
        """run_ids with a readable result.json (any status), sorted."""
        return [rid for rid in self._result_ids() if self.result(rid) is not None]

    def done_ids(self) -> set[str]:
        """run_ids whose outcome is final (finished or diverged): skipped on a rerun. Each result read once."""
        return {rid for rid in self._result_ids()
                if (result := self.result(rid)) is not None and result["status"] in DONE_STATUSES}

    def write_run(self, result: dict) -> None:
        """Write one run_one result; result.json last. Rewriting a run_id replaces it."""
        run_id = result["run_id"]
        d = self.run_dir(run_id)
        old = d / "result.json"
        old.unlink(missing_ok=True)  # a replaced run is "not done" until its new result lands
        atomic_write_json(d / "config.json", {**result["config"], "run_id": run_id})
        atomic_write_parquet(d / "steps.parquet", steps_frame(run_id, result["steps"]))
        atomic_write_parquet(d / "epochs.parquet", epochs_frame(run_id, result["epochs"]))
        emb = result.get("embeddings")
        if emb is not None:
            atomic_write_npz(d / "embeddings.npz", X=np.asarray(emb["X"], dtype=np.float32),
                             y=np.asarray(emb["y"], dtype=np.int64))
        else:
            (d / "embeddings.npz").unlink(missing_ok=True)
        summary = {k: result.get(k) for k in ("run_id", "status", "error", "diverged_step",
                                              "diverged_component", "wall_time_s",
                                              "train_time_s", *EXTRA_RUN_COLUMNS)}
        summary["metrics"] = result.get("metrics", {})
        atomic_write_json(old, summary)
        self.written[result["status"]] += 1

    def _run_row(self, run_id: str) -> dict:
        d = self.run_dir(run_id)
        res = self._cached_json(d / "result.json")
        # config.json holds the keys the run reads; the others read as their defaults
        row = {**DEFAULTS.as_dict(), **self._cached_json(d / "config.json")}
        row.update({k: res.get(k) for k in RUN_COLUMNS + EXTRA_RUN_COLUMNS if k in res})
        for col in METRIC_COLUMNS:
            row[col] = res.get("metrics", {}).get(col, float("nan"))
        return row

    # ------------------------------------------------------------- consolidate
    def consolidate(self) -> None:
        """Rewrite runs/steps/epochs.parquet from the per-run files (atomically)."""
        for name in ("runs", "steps", "epochs"):
            frame = self._table(name)  # cheap when already consolidated
            atomic_write_parquet(self.root / f"{name}.parquet", frame)

    def _runs_frame(self, ids: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame([self._run_row(r) for r in ids])
        for col in RUN_COLUMNS:
            if col not in frame:
                frame[col] = pd.Series(dtype=object)
        extra = [c for c in frame.columns if c not in RUN_COLUMNS]
        frame = frame[RUN_COLUMNS + extra]
        for col in ("diverged_step",):
            frame[col] = frame[col].astype("Int64")
        return frame

    def _table(self, name: str) -> pd.DataFrame:
        """Consolidated table `name`; rebuilt from the per-run files when stale or unreadable."""
        ids = self.stored_ids()
        path = self.root / f"{name}.parquet"
        newest = max((self.run_dir(r).joinpath("result.json").stat().st_mtime_ns for r in ids),
                     default=0)
        if path.is_file() and path.stat().st_mtime_ns >= newest:
            try:
                cached = _read_parquet(path)
                if "run_id" not in cached:
                    raise ValueError(f"{str(path)!r} has no run_id column")
            except ValueError as err:
                self._warn(f"{err}; rebuilt from the run folders")
            else:
                row_key = {"runs": ["run_id"], "steps": ["run_id", "step"],
                           "epochs": ["run_id", "epoch"]}[name]
                unique = all(k in cached for k in row_key) and not cached.duplicated(row_key).any()
                if set(cached["run_id"]) <= set(ids) and unique and (
                        name != "runs" or len(cached) == len(ids)):
                    return cached  # (an older store may hold a run twice: then it is rebuilt)
        if name == "runs":
            return self._runs_frame(ids)
        frames = []
        for run_id in ids:
            try:
                frames.append(_read_parquet(self.run_dir(run_id) / f"{name}.parquet"))
            except ValueError as err:
                self._warn(f"run {run_id}: {err}; its {name} are left out (run it again: "
                           f"delete {str(self.run_dir(run_id))!r} and re-run the grid)")
        return _concat(frames, name)

    def runs(self) -> pd.DataFrame:
        """One row per stored run (RUN_COLUMNS first)."""
        return self._table("runs")

    def steps(self) -> pd.DataFrame:
        """One row per training step per stored run."""
        return self._table("steps")

    def epochs(self) -> pd.DataFrame:
        """One row per validation evaluation per stored run."""
        return self._table("epochs")

    def embeddings(self, run_id: str) -> tuple[np.ndarray, np.ndarray]:
        """-> X (N, E) float32, y (N,) int64: the run's test embeddings."""
        path = self.run_dir(run_id) / "embeddings.npz"
        if not path.is_file():
            raise ValueError(f"run_id {run_id!r}: no embeddings stored in {str(self.root)!r}")
        try:
            wrong = not_an_npz(path)
            if wrong:
                raise ValueError(wrong)
            with np.load(path, allow_pickle=False) as data:
                return data["X"], data["y"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"run_id {run_id!r}: {str(path)!r} is not a readable .npz of X and "
                             f"y ({type(err).__name__}: {err}); delete the run folder and run "
                             f"the grid again") from err

    def remove(self) -> None:
        """Delete the whole store directory."""
        shutil.rmtree(self.root, ignore_errors=True)


def steps_frame(run_id: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "run_id", run_id)
    return frame


def epochs_frame(run_id: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=None if rows else ["epoch"])
    frame.insert(0, "run_id", run_id)
    return frame


def _concat(frames: list[pd.DataFrame], name: str) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({"run_id": pd.Series(dtype=str), "epoch": pd.Series(dtype="int64")})
    return pd.concat(frames, ignore_index=True, sort=False)
