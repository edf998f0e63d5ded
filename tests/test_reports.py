"""End-to-end tests of reports/ on a small REAL grid (ablations.runner.run_grid in a tmp dir).

One module-scoped grid and one report are shared by every test here: a few
2-epoch digits runs (batch_hard and the combined objective, margin x lr, 2 seeds)
and one UMAP fit (its numba compile dominates the time of this file).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from ablations.runner import run_grid
from ablations.store import ResultsStore
from reports.build import build_report, write_report
from reports.store_view import read_store
from reports.variants import SEED_FREE, annotate

GRID = """
[base]
dataset = "digits"
epochs = 2
eval_every = 2
width = 32
embedding_dim = 8
weighting = "grad_norm_balance"

[grid]
loss = ["batch_hard", "combined"]
margin = [0.1, 0.3]
lr = [0.003, 0.01]
seed = [0, 1]
"""
FIGURES = ("loss_curves", "validation_curves", "components", "component_shares", "weights", "grad_norms", "monitors",
           "sensitivity_margin_lr", "sensitivity_weights", "map_vs_margin", "umap")
ALWAYS_DRAWN = ("loss_curves", "validation_curves", "monitors", "sensitivity_margin_lr", "map_vs_margin", "umap")
COMBINED_FIGURES = ("components", "component_shares", "weights", "grad_norms")
UMAP = dict(umap_epochs=30, umap_max_points=300, random_state=0, max_curve_points=100)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    (root / "grid.toml").write_text(GRID)
    run_grid(root / "grid.toml", root / "store", workers=1)
    return root / "store"


@pytest.fixture(scope="module")
def report(store_dir) -> Path:
    return build_report(store_dir, umap_epochs=UMAP["umap_epochs"],
                        umap_max_points=UMAP["umap_max_points"])


@pytest.fixture(scope="module")
def runs(store_dir) -> pd.DataFrame:
    return annotate(ResultsStore(store_dir).runs())


class _Refs(HTMLParser):
    """Collects every attribute that can load or link a resource, and the section headings."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "xlink:href"):
                self.refs.append((tag, name, value or ""))


def _sections(page: str) -> dict[str, str]:
    """report.html -> figure name -> its HTML up to the next heading."""
    parts = re.split(r"<h3 id='([a-z_]+)'>", page)
    return {parts[i]: parts[i + 1].split("<h2")[0] for i in range(1, len(parts), 2)}


def test_report_writes_html_summary_figures_and_tables(report, store_dir):
    out = store_dir / "report"   # the default out_dir
    assert report == out / "report.html"
    assert (out / "summary.md").read_text().startswith("# tripletlab comparison report")
    assert {p.name for p in (out / "tables").glob("*.csv")} == {
        "leaderboard.csv", "configurations.csv", "sensitivity_margin_lr.csv", "runs_status.csv",
        "umap_runs.csv", "missing.csv", "verdict.csv", "flags.csv", "figures.csv"}


def test_every_figure_is_a_nonempty_image_or_says_why_not(report, runs):
    page = report.read_text()
    sections = _sections(page)
    assert set(sections) == set(FIGURES)
    combined_ok = ((runs["loss"] == "combined") & (runs["status"] == "finished")).any()
    must_draw = ALWAYS_DRAWN + (COMBINED_FIGURES if combined_ok else ())
    for name, html in sections.items():
        png_file, svg_file = report.parent / "figures" / f"{name}.png", report.parent / "figures" / f"{name}.svg"
        if "Not drawn:" in html:
            assert name not in must_draw, f"{name}: {html}"
            assert not png_file.exists() and re.search(r"Not drawn: \w+", html)
            continue
        png = png_file.read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
        assert "<svg" in svg_file.read_text()[:2000]
        embedded = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html).group(1)
        assert base64.b64decode(embedded) == png


def test_html_references_no_external_file_or_url(report):
    page = report.read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "no image at all"
    for tag, name, value in parser.refs:
        assert (tag, name) == ("img", "src") and value.startswith("data:image/png;base64,"), (tag, name, value[:80])
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert "url(" not in page and "@import" not in page
    assert not re.search(r"(?:https?|file|ftp)://", page)


def test_leaderboard_matches_a_hand_computation_from_the_store(report, runs):
    board = pd.read_csv(report.parent / "tables" / "leaderboard.csv").set_index("variant")
    done = runs[runs["status"] == "finished"]
    assert set(board.index) == set(done["variant"])
    assert set(board.loc[["raw", "untrained"], "kind"]) == {"baseline"}
    assert board.loc[["raw", "untrained"], "rank"].isna().all()
    means = done.groupby(["variant", "config_key"])["val_map_at_r"].mean()
    best_key = {v: means[v].idxmax() for v in board.index}
    by_seed = {}
    for variant, row in board.iterrows():
        chosen = done[(done["variant"] == variant) & (done["config_key"] == best_key[variant])]
        assert row["val_map_at_r_mean"] == pytest.approx(means[variant].max())
        assert row["units_finished"] == f"{len(chosen)}/{len(chosen)}"   # no run failed here
        by_seed[variant] = chosen.set_index("seed")["test_map_at_r"]
        if variant in SEED_FREE:   # one run per fold: raw and the classical baselines
            assert len(chosen) == 1 and row["test_map_at_r_mean"] == pytest.approx(
                chosen["test_map_at_r"].iloc[0])
            continue
        for metric in ("val_map_at_r", "test_precision_at_1", "test_r_precision", "test_map_at_r",
                       "test_recall_at_1", "test_recall_at_8"):
            x = chosen[metric].to_numpy()
            low, high = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
            assert row[f"{metric}_n"] == len(x) == 2
            assert row[f"{metric}_mean"] == pytest.approx(x.mean())
            assert (row[f"{metric}_low"], row[f"{metric}_high"]) == (pytest.approx(low), pytest.approx(high))
    trained = board[board["kind"] == "variant"]
    best = trained.index[trained["rank"] == 1][0]
    assert board.loc[best, "val_map_at_r_mean"] == trained["val_map_at_r_mean"].max()
    for variant in board.index.drop(best):
        expected = st.ttest_rel(by_seed[variant].sort_index(), by_seed[best].sort_index()) \
            if variant not in SEED_FREE else st.ttest_1samp(by_seed[variant].iloc[0] - by_seed[best], 0.0)
        assert board.loc[variant, "paired_p"] == pytest.approx(expected.pvalue, nan_ok=True)
    # a single other variant: Holm over a family of one is the p-value itself
    others = trained.index.drop(best)
    assert trained.loc[others, "paired_p_holm"].tolist() == pytest.approx(
        trained.loc[others, "paired_p"].tolist(), nan_ok=True)
    base = board[board["kind"] == "baseline"].sort_values("val_map_at_r_mean").index[-1]
    diff = (by_seed[best] - (by_seed[base] if base not in SEED_FREE else by_seed[base].iloc[0])).to_numpy()
    assert board.loc[best, "vs_baseline_diff"] == pytest.approx(diff.mean())
    assert board.loc[best, "vs_baseline_n"] == 2
    page = report.read_text()
    assert "paired t-test" in page and "Holm" in page
    assert page.index("id='verdict'") < page.index("id='protocol'") < page.index("id='leaderboard'")


def test_tables_have_one_row_per_run_configuration_and_cell(report, runs):
    tables = report.parent / "tables"
    status = pd.read_csv(tables / "runs_status.csv")
    assert len(status) == len(runs) and set(status["run_id"]) == set(runs["run_id"])
    assert list(status.columns[:5]) == ["run_id", "variant", "fold", "seed", "status"]
    configs = pd.read_csv(tables / "configurations.csv")
    assert len(configs) == runs["config_key"].nunique()
    assert {"variant", "config", "margin", "lr", "n_runs", "n_finished", "val_map_at_r_mean",
            "val_map_at_r_low", "val_map_at_r_high"} <= set(configs.columns)
    assert configs["n_runs"].sum() == len(runs)
    cells = pd.read_csv(tables / "sensitivity_margin_lr.csv")
    done = runs[runs["status"] == "finished"]
    trained = done[done["baseline"] == ""]   # baselines have no margin or lr
    assert len(cells) == len(trained.groupby(["variant", "margin", "lr"]))
    umap_runs = pd.read_csv(tables / "umap_runs.csv")
    assert set(umap_runs["variant"]) == set(done["variant"]) and (umap_runs["n_points"] > 0).all()


def test_header_states_the_protocol(report, runs, store_dir):
    page = report.read_text()
    counts = runs["status"].value_counts()
    assert f"{len(runs)} stored: {counts.get('finished', 0)} finished" in page
    _, y = ResultsStore(store_dir).embeddings(runs["run_id"].iloc[0])
    classes = ", ".join(str(c) for c in np.unique(y))
    for text in ("digits", "validation MAP@R", "Student-t", "paired t-test", "class-disjoint",
                 f"test classes {classes} ({len(y)} points"):
        assert text in page


def test_a_partial_grid_still_reports_what_is_missing(store_dir, runs, tmp_path):
    view = read_store(store_dir)
    table = view.runs.copy()
    ids = table.sort_values("run_id")["run_id"].tolist()
    failed, diverged = ids[0], ids[1]
    metrics = [c for c in table.columns if c.startswith(("val_", "test_"))]
    table.loc[table["run_id"] == failed, ["status", "error"]] = ["failed", "RuntimeError: out of luck"]
    table.loc[table["run_id"] == diverged, ["status", "diverged_step", "diverged_component"]] = [
        "diverged", 5, "ce_pos"]
    table.loc[table["run_id"].isin([failed, diverged]), metrics] = np.nan
    table = table[table["run_id"] != ids[2]]                      # a cell never run
    no_embeddings = set(ids[3:])                                  # only two runs keep theirs

    def embeddings(run_id):
        if run_id in no_embeddings:
            raise ValueError(f"run_id {run_id!r}: no embeddings stored")
        return view.embeddings(run_id)

    partial = dataclasses.replace(view, runs=table, embeddings=embeddings)
    page = write_report(partial, tmp_path, **UMAP).read_text()
    assert f"Run {failed}" in page and "failed: RuntimeError: out of luck" in page
    assert f"Run {diverged}" in page and "diverged at step 5 (component ce_pos)" in page
    assert "is not selectable: no finished run for seed" in page
    assert "could not be read" in page or "no test embeddings" in page
    board = pd.read_csv(tmp_path / "tables" / "leaderboard.csv")
    assert not board.empty and (board["test_map_at_r_n"] >= 1).all()
    missing = pd.read_csv(tmp_path / "tables" / "missing.csv")["missing"]
    assert missing.str.contains(failed).any() and missing.str.contains(diverged).any()
    absent = missing[missing.str.contains("are not in the store")]
    assert len(absent) == 1 and ids[2] in absent.iloc[0] and absent.iloc[0].startswith("1 of the")


def test_a_store_without_baselines_or_mixing_datasets_says_so(store_dir, tmp_path):
    from reports.verdict import read_warning

    view = read_store(store_dir)
    table = view.runs[view.runs["baseline"] == ""].copy()  # every baseline deleted
    page = write_report(dataclasses.replace(view, runs=table), tmp_path / "a", **UMAP).read_text()
    assert "This store has no finished baseline run: its baseline runs are not in the store" in page
    assert "made before baselines existed" not in page and "predates" not in page
    table.loc[table["seed"] == 1, "dataset"] = "blobs"  # as if --extend added another dataset
    page = write_report(dataclasses.replace(view, runs=table), tmp_path, **UMAP).read_text()
    # the runs on other data than the grid's are left out, and listed once with why
    board = pd.read_csv(tmp_path / "tables" / "leaderboard.csv")
    assert (board["test_map_at_r_n"] == 1).all()  # the seed-0 runs only
    missing = pd.read_csv(tmp_path / "tables" / "missing.csv")["missing"]
    other = missing[missing.str.contains("on other data")]
    blobs = table.loc[table["dataset"] == "blobs", "run_id"]
    assert len(other) == 1 and f"{len(blobs)} on blobs: not the data of the store's grid" in other.iloc[0]
    assert all(rid in other.iloc[0] for rid in blobs) 
    assert "This store mixes" not in (read_warning(tmp_path) or "")
    # a store whose grid cannot be read: every run is kept, and the mixing said loudly
    page = write_report(dataclasses.replace(view, runs=table, grid_text="[base]\nnot_a_key = 1\n"), tmp_path,
                        **UMAP).read_text()
    warning = read_warning(tmp_path)
    assert warning.startswith("This store mixes runs on 2 different data sources (blobs; digits)")
    assert "pool them as one" in page


def test_build_report_names_a_missing_store_dir(tmp_path):
    with pytest.raises(ValueError, match="store_dir"):
        build_report(tmp_path / "nowhere")
