"""Rewrite a results store of an older store format to the current one (STORE_FORMAT).

A store records its format in DIR/store.json; a store without that file that holds
run folders is of format 1. `open_store(DIR)` migrates such a store once, with a
one-line message, before `tripletlab run` writes to it or `tripletlab report` reads
it; `tripletlab migrate DIR` does the same on request (`migrate_store`).

Format 1 -> 2: the run ids. Format 1 hashed the keys of its first version always and
every later key only when it differed from its default (a missing key counted as its
default, a missing `split_protocol` as "rotated"); format 2 hashes every key of the
canonical config with the store format (ablations/config.py). The format-1 rule lives
only here (`v1_run_id`), frozen with the defaults it compared against, so that a
default changed later still migrates a format-1 store right.
Format 2 -> 3: baselines as their own kind of run. Format 2 named a baseline as a value of
`loss` ("raw", ...); format 3 sets the key `baseline` to it (a trained run has baseline = "")
and, since a baseline reads no loss, resets `loss` to its default (`v2_run_id` is format 2's
rule).
Format 3 also hashes only the keys a run reads, and config.json holds only those.
Each run folder whose config hashes to its name under format 1 or 2 gets the config of the
current format (the keys it lacked filled in as its format read them, then the part its
components read) and
moves to the folder of its new id, with the run id rewritten in config.json, result.json and
the per-run tables; the run ids of search/trials.parquet are rewritten; the consolidated
tables are rebuilt from the run folders. Metrics, steps, epochs and embeddings are copied
unchanged.

Crash safety: the renames are listed first in DIR/migration.json (old id -> new id);
each run's new folder is written in full (result.json last) before its old folder is
removed, and store.json is written last. Killed at any point, the next open or
`tripletlab migrate` resumes from the journal: a run is in its old folder, its new
one, or (between the two steps) both, never in neither. Folders that are not runs
of the store (a copy under another name, a hand-made folder) are left as they are.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.config import DEFAULTS, FIELDS, INTRODUCED, LEGACY_SPLIT_PROTOCOL, STORE_FORMAT, canonical, read_part, stored_config_hash
from ablations.store import (FORMAT_FILE, RUN_ID, ResultsStore, atomic_write_bytes, atomic_write_json,
                             atomic_write_parquet, is_store, store_format)

JOURNAL_FILE = "migration.json"
# where a run goes whose new id another run of the store already holds (two format-1 runs that
# train the same thing): kept, out of runs/
DUPLICATES_DIR = "migrated_duplicates"
TRIALS = Path("search") / "trials.parquet"
CONSOLIDATED = ("runs.parquet", "steps.parquet", "epochs.parquet")

# Format 1: the keys added after its first version, with the defaults its ids compared them to
# (a key at this value was left out of the id).
V1_LATER_DEFAULTS: dict[str, Any] = {
    "encoder": "mlp", "image_shape": "", "conv_channels": 32, "nuisance_classes": 120,
    "nuisance_points_per_class": 40, "nuisance_content_dim": 8, "nuisance_dim": 24,
    "nuisance_scale": 1.0, "nuisance_within": 0.5, "nuisance_warp": 1.0, "idx_images": "",
    "idx_labels": "", "class_folds": 1, "fold": 0, "data_fingerprint": "", "temperature": 0.07,
    "ce": "ce", "focal_gamma": 2.0, "focal_alpha": -1.0, "split_protocol": "fixed_test",
    "pose_classes": 120, "pose_points_per_class": 40, "pose_content_dim": 8, "pose_dim": 8,
    "pose_scale": 1.0, "pose_within": 0.5, "pose_gain": 0.2, "pose_warp": 0.5, "memory_size": 0,
    "memory_weight": 1.0, "memory_start_epoch": 0,
}


# Formats 1 and 2 named a baseline as a value of `loss`; format 3 as `baseline` (loss unread).
# Every key of format 2 (its config.json held each of them): the keys introduced before
# `baseline` (config.INTRODUCED is append-only).
FORMAT_2_KEYS = INTRODUCED[:INTRODUCED.index("baseline")]
FORMAT_2_BASELINES = ("raw", "untrained", "lda", "nca", "pca_whiten")


def _as_format_2(stored: dict[str, Any]) -> dict[str, Any]:
    """A config.json (no run_id) -> its keys as format 2 wrote them: a format-3 config's
    baseline as its loss, the key `baseline` left out."""
    values = {k: v for k, v in stored.items() if k not in ("run_id", "baseline")}
    if stored.get("baseline"):
        values["loss"] = stored["baseline"]
    return values


def _v1_values(stored: dict[str, Any]) -> dict[str, Any]:
    """A format-1 config.json -> its keys as format 1 read them (missing later keys filled in)."""
    legacy = {"split_protocol": LEGACY_SPLIT_PROTOCOL} if "split_protocol" not in stored else {}
    return {**V1_LATER_DEFAULTS, **legacy, **_as_format_2(stored)}


def v1_run_id(stored: dict[str, Any]) -> str:
    """The run id format 1 gave the config `stored` (a config.json of a format-1 store)."""
    values = _v1_values(stored)

    def hashed(key: str) -> bool:
        if key == "split_protocol":
            return values["class_folds"] > 1 and values[key] != LEGACY_SPLIT_PROTOCOL
        return key not in V1_LATER_DEFAULTS or values[key] != V1_LATER_DEFAULTS[key]

    text = json.dumps({k: v for k, v in values.items() if hashed(k)}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def v2_run_id(stored: dict[str, Any]) -> str:
    """The run id format 2 gave the config `stored` (a config.json of a format-2 store): every
    key of its canonical config with the store format."""
    text = json.dumps({"store_format": 2, **_as_format_2(stored)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def config_from_format_1(stored: dict[str, Any]) -> dict[str, Any]:
    """A format-1 config.json -> the full canonical config of the current format (no run_id)."""
    return config_from_format_2({k: v for k, v in _v1_values(stored).items() if k in FIELDS or k == "loss"})


def config_from_format_2(values: dict[str, Any]) -> dict[str, Any]:
    """A format-2 config (a baseline as a value of `loss`) -> the full canonical config of the
    current format: `baseline` set (its `loss` then unread and reset), unused keys reset."""
    values = {k: v for k, v in values.items() if k != "run_id"}
    if not set(FORMAT_2_KEYS) <= set(values) <= set(FIELDS):  # not a config this code can read:
        return values                                          # migrated as it is
    values["baseline"] = values["loss"] if values.get("loss") in FORMAT_2_BASELINES else ""
    values = {**DEFAULTS, **values}  # keys declared since format 2 (a component registered here): defaults
    try:
        return read_part(canonical(values))
    except (ValueError, ImportError):  # a user's loss that cannot be imported here
        return values


def open_store(root: str | Path) -> ResultsStore:
    """The store at `root`, migrated first (with a message on stderr) when of an older format."""
    root = Path(root)
    found = store_format(root)
    if found is not None and found < STORE_FORMAT:
        migrate_store(root)
    return ResultsStore(root)


def migrate_store(root: str | Path) -> int:
    """Migrate the store at `root` to STORE_FORMAT (resuming an interrupted migration);
    return the number of runs renamed (0: already current). ValueError naming `root` when it
    is no results store, of a newer format, or cannot be written."""
    root = Path(root)
    if not is_store(root):
        raise ValueError(f"store {str(root)!r} is not a results store (no runs/, grid.toml or "
                         f"{FORMAT_FILE} inside); make one with `tripletlab run GRID.toml --out DIR`")
    found = store_format(root)
    if found == STORE_FORMAT:
        (root / JOURNAL_FILE).unlink(missing_ok=True)  # killed after store.json was written
        return 0
    if found is not None and found > STORE_FORMAT:
        raise ValueError(f"store {str(root)!r} is of store format {found}, newer than this "
                         f"tripletlab's {STORE_FORMAT}; upgrade tripletlab to read it")
    try:
        renamed = _migrate(root)
    except OSError as err:
        raise ValueError(f"store {str(root)!r} is of store format {found or 1} and cannot be "
                         f"migrated to format {STORE_FORMAT} here ({err.strerror or err}); run "
                         f"`tripletlab migrate {root}` where the store is writable") from err
    print(f"migrated the results store {root} from store format {found or 1} to "
          f"{STORE_FORMAT}: {renamed} run(s) renamed to their new run ids", file=sys.stderr)
    return renamed


def _read_config(folder: Path) -> dict | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _plan(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """old id -> full config of the current format, for every format-1 or format-2 run folder of runs/."""
    plan = {}
    for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else ():
        if not RUN_ID.fullmatch(folder.name) or not folder.is_dir() or folder.is_symlink():
            continue
        config = _read_config(folder)
        if config is None or stored_config_hash(config) == folder.name:
            continue  # unreadable (the store warns), or already of the current format
        if v2_run_id(config) == folder.name:
            plan[folder.name] = config_from_format_2(config)
        elif v1_run_id(config) == folder.name:
            plan[folder.name] = config_from_format_1(config)
    return plan


def _migrate(root: Path) -> int:
    runs_dir = root / "runs"
    journal = root / JOURNAL_FILE
    renames: dict[str, str] = {}
    if journal.is_file():  # an interrupted migration: its renames, some of them done
        renames = json.loads(journal.read_text(encoding="utf-8"))["renamed"]
    plan = _plan(runs_dir)
    renames.update({old: stored_config_hash(config) for old, config in plan.items()})
    atomic_write_json(journal, {"store_format": STORE_FORMAT, "renamed": renames})
    for old, config in plan.items():
        _move_run(root, old, renames[old], config)
    _rename_trials(root / TRIALS, renames)
    for name in CONSOLIDATED:  # caches of the run folders: rebuilt under the new ids
        (root / name).unlink(missing_ok=True)
    if runs_dir.is_dir():
        ResultsStore(root).consolidate()
    atomic_write_json(root / FORMAT_FILE, {"store_format": STORE_FORMAT})
    journal.unlink()
    return len(renames)


def _move_run(root: Path, old: str, new: str, config: dict[str, Any]) -> None:
    """runs/<old> -> runs/<new>: every file written in the new folder (result.json last),
    then the old folder removed."""
    src, dst = root / "runs" / old, root / "runs" / new
    result = src / "result.json"
    copied = _read_config(dst) if (dst / "result.json").is_file() else None
    if copied is not None and stored_config_hash(copied) == new:
        # the new folder is complete: this run was copied before a kill, or another format-1
        # run trains the same thing (then this one is kept aside, never deleted)
        if not _same_result(result, dst / "result.json"):
            (root / DUPLICATES_DIR).mkdir(exist_ok=True)
            shutil.move(str(src), str(root / DUPLICATES_DIR / old))
            return
        shutil.rmtree(src)
        return
    if dst.is_dir():  # an incomplete copy (killed while writing it): written again from scratch
        shutil.rmtree(dst)
    atomic_write_json(dst / "config.json", {**config, "run_id": new})
    for name in ("steps.parquet", "epochs.parquet"):
        if (src / name).is_file():
            try:
                frame = pd.read_parquet(src / name)
            except (OSError, ValueError):  # damaged: copied as it is (the store warns on reading)
                atomic_write_bytes(dst / name, (src / name).read_bytes())
                continue
            if "run_id" in frame:
                frame["run_id"] = new
            atomic_write_parquet(dst / name, frame)
    if (src / "embeddings.npz").is_file():
        atomic_write_bytes(dst / "embeddings.npz", (src / "embeddings.npz").read_bytes())
    if result.is_file():
        try:
            summary = json.loads(result.read_text(encoding="utf-8"))
        except ValueError:
            atomic_write_bytes(dst / "result.json", result.read_bytes())
        else:
            if isinstance(summary, dict) and "run_id" in summary:
                summary["run_id"] = new
            atomic_write_json(dst / "result.json", summary)
    shutil.rmtree(src)


def _same_result(old: Path, new: Path) -> bool:
    """Whether two result.json files hold the same run (apart from its id)."""
    try:
        a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (old, new))
    except (OSError, ValueError):
        return not old.exists()
    return isinstance(a, dict) and isinstance(b, dict) and \
        {**a, "run_id": None} == {**b, "run_id": None}


def _rename_trials(path: Path, renames: dict[str, str]) -> None:
    """search/trials.parquet: each trial's comma-separated run ids under their new names."""
    if not path.is_file() or not renames:
        return
    trials = pd.read_parquet(path)
    if "run_ids" not in trials:
        return
    trials["run_ids"] = [",".join(renames.get(r, r) for r in str(text).split(",") if r)
                         if isinstance(text, str) else text for text in trials["run_ids"]]
    atomic_write_parquet(path, trials)
