"""The report's figures and tables at the demo's size and beyond: 36 and 100 classes, 11 and 16
variants. Small fake stores (`wide_view`), UMAP replaced by a fixed linear projection
(the layout is under test, not UMAP), so these run in seconds.

Checked on every figure: drawn, no legend overlapping an axis and every axis labelled (matplotlib
bounding boxes, reports/figures.py layout_problems), colour bars on the heatmaps; and the
palette, the panel order, the tables' wrapping, the verdict's answer.
"""

from __future__ import annotations

import itertools
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from reports.build import readable_configs, write_report
from reports.figures import layout_problems, variant_palette, variant_styles
from reports.formatting import display_leaderboard, p_value
from reports.leaderboard import select
from reports.sensitivity import sensitivity_figures
from reports.store_view import StoreView
from reports.variants import annotate
from reports.verdict import verdict
from test_reports_units import run_row

matplotlib.use("Agg")
# (loss, weighting) of up to 16 trained variants, then the two baselines
VARIANTS = [("naive", "fixed"), ("batch_all", "fixed"), ("batch_hard", "fixed"),
            ("batch_hard_soft", "fixed"), ("semi_hard_tf", "fixed"), ("semi_hard_pml", "fixed"),
            ("combined", "fixed"), ("combined", "uncertainty"), ("combined", "grad_norm_balance"),
            ("multi_similarity", "fixed"), ("contrastive", "fixed"), ("circle", "fixed"),
            ("ntxent", "fixed"), ("combined", "dwa"), ("combined", "inverse_ema"),
            ("combined", "gradnorm")]
FIGURES = ("loss_curves", "validation_curves", "components", "component_shares", "weights",
           "grad_norms", "monitors", "sensitivity_margin_lr", "sensitivity_weights",
           "map_vs_margin", "umap")
HEATMAPS = ("sensitivity_margin_lr", "sensitivity_weights")


def linear_projection(x: np.ndarray) -> np.ndarray:
    """x (N, E) -> (N, 2): the first two coordinates (a fixed, instant stand-in for UMAP)."""
    return np.asarray(x, dtype=float)[:, :2]


def wide_view(n_variants: int, n_classes: int, *, seeds=(0, 1), points_per_class: int = 3,
              steps_per_run: int = 8, seed: int = 0) -> StoreView:
    """A fake store: n_variants trained variants over margin x lr (combined [fixed] also over
    w_pos), the raw and untrained baselines; steps, epochs and test embeddings of n_classes."""
    rng = np.random.default_rng(seed)
    runs, steps, epochs, embeddings = [], [], [], {}
    cells = []
    for loss, weighting in VARIANTS[:n_variants]:
        weights = (0.5, 1.0) if (loss, weighting) == ("combined", "fixed") else (1.0,)
        margins = (0.2,) if loss in ("batch_hard_soft", "multi_similarity", "circle", "contrastive",
                                     "ntxent") else (0.1, 0.2)
        cells += [dict(loss=loss, weighting=weighting, margin=m, lr=lr, w_pos=w)
                  for m, lr, w in itertools.product(margins, (1e-3, 1e-2), weights)]
    cells += [dict(baseline="raw"), dict(baseline="untrained")]
    name = lambda c: c.get("baseline") or c["loss"]  # noqa: E731
    skill = {v: rng.uniform(0.3, 0.7) for v in {(name(c), c.get("weighting")) for c in cells}}
    labels = np.repeat(np.arange(100, 100 + n_classes), points_per_class)
    for i, (cell, s) in enumerate(itertools.product(cells, seeds)):
        if cell.get("baseline") == "raw" and s != seeds[0]:
            continue   # seed-free: one run per fold
        run_id = f"r{i:04d}"
        quality = skill[(name(cell), cell.get("weighting"))] + rng.normal(0, 0.02)
        runs.append(run_row(run_id, seed=s, val=quality + 0.1, test=quality, **cell))
        embeddings[run_id] = ((rng.normal(size=(len(labels), 4)) + (labels[:, None] - 100) * quality)
                              .astype(np.float32), labels.astype(np.int64))
        for epoch in range(3):
            epochs.append({"run_id": run_id, "epoch": epoch, "step": epoch * 4,
                           "val_map_at_r": quality * (epoch + 1) / 3})
        if cell.get("baseline"):
            continue
        for step in range(steps_per_run):
            row = {"run_id": run_id, "epoch": step // 4, "step": step,
                   "loss_triplet": np.exp(-step / 5) * quality, "active_fraction": 1.0,
                   "pos_ratio": rng.uniform(), "violation_rate": rng.uniform()}
            if cell["loss"] == "combined":
                row.update(loss_ce_pos=0.5, loss_ce_neg=0.3, weight_triplet=1.0,
                           weight_ce_pos=cell["w_pos"], weight_ce_neg=1.0, gradnorm_triplet=1.0,
                           gradnorm_ce_pos=0.5, gradnorm_ce_neg=0.2)
            row["loss"] = sum(v for k, v in row.items() if k.startswith("loss_"))
            steps.append(row)
    return StoreView(runs=pd.DataFrame(runs), steps=pd.DataFrame(steps),
                     epochs=pd.DataFrame(epochs), grid_text="[base]\n",
                     embeddings=lambda run_id: embeddings[run_id])


@pytest.fixture(scope="module", params=[(11, 36), (16, 100)], ids=["11x36", "16x100"])
def built(request, tmp_path_factory):
    n_variants, n_classes = request.param
    out = tmp_path_factory.mktemp(f"report{n_variants}")
    view = wide_view(n_variants, n_classes)
    page = write_report(view, out, umap_epochs=5, umap_max_points=1000, random_state=0,
                        max_curve_points=20, umap_project=linear_projection).read_text()
    return n_variants, n_classes, out, page


def test_every_figure_is_drawn_without_a_layout_problem(built):
    n_variants, n_classes, out, page = built
    table = pd.read_csv(out / "tables" / "figures.csv", keep_default_na=False).set_index("name")
    assert set(table.index) == set(FIGURES)
    assert table["drawn"].all(), table.loc[~table["drawn"], "reason"].to_dict()
    assert (table["layout_problems"] == "").all(), table["layout_problems"].to_dict()
    for name in HEATMAPS:
        assert table.loc[name, "colorbars"] >= 1, name
    # 100 classes: a continuous colour map with its colour bar; 36 too (more than 18)
    assert table.loc["umap", "colorbars"] == 1
    # sane image sizes: at most the page's width at DPI 110 plus a legend, never a strip
    assert (table["width_px"] <= 1400).all(), table["width_px"].to_dict()
    assert (table["height_px"] >= 150).all() and (table["height_px"] <= 4000).all()


def test_umap_shows_the_best_variant_then_the_baselines_and_says_how_many_points(built):
    n_variants, n_classes, out, page = built
    board = pd.read_csv(out / "tables" / "leaderboard.csv")
    umap_runs = pd.read_csv(out / "tables" / "umap_runs.csv")
    best = board.loc[board["kind"] == "variant", "variant"].iloc[0]
    bases = board.loc[board["kind"] == "baseline", "variant"].tolist()
    assert sorted(bases) == ["raw", "untrained"]
    assert umap_runs["variant"].tolist()[:3] == [best, *bases]
    assert umap_runs["panel"].tolist() == list(range(1, len(umap_runs) + 1))
    assert len(umap_runs) == n_variants + 2
    assert pd.isna(umap_runs.set_index("variant").loc["raw", "seed"])   # seed-free: no "seed 0"
    n = n_classes * 3
    assert (umap_runs["n_points"] == n).all() and (umap_runs["n_shown"] == n).all()
    caption = re.search(r"<h3 id='umap'>.*?<figcaption>(.*?)</figcaption>", page, re.S).group(1)
    assert f"all {n} stored test points" in caption
    assert f"{n_classes} test classes" in caption and "continuous" in caption


def test_the_verdict_answers_first(built):
    n_variants, n_classes, out, page = built
    answer = re.search(r"<div class='answer' id='answer'>(.*?)</div>", page, re.S).group(1)
    sentences = re.findall(r"<p>(.*?)</p>", answer)
    assert 2 <= len(sentences) <= 3
    board = pd.read_csv(out / "tables" / "leaderboard.csv")
    trained = board[board["kind"] == "variant"]
    best, second = trained["variant"].iloc[:2]
    assert sentences[0].startswith(f"Use {best}")
    assert f"the runner-up, {second}, by {abs(trained['paired_diff'].iloc[1]):.3f}" in sentences[0]
    assert "the best baseline, " in sentences[0]
    assert sentences[1].startswith("How sure:") and "Holm" in sentences[1]
    assert "significantly different from" not in page


def test_tables_never_break_a_number_and_scroll_in_their_own_box(built):
    _, _, _, page = built
    assert "white-space: nowrap" in page and "overflow-x: auto" in page
    tables = page.count("<table")
    assert tables == page.count("<div class='scroll'><table")
    # the leaderboard is split: the MAP@R comparison, then the other test metrics
    assert page.count("<h2 id='leaderboard'>") == 1 and "id='other_metrics'" in page
    head = page.split("<h2 id='leaderboard'>")[1].split("<h4")[0]
    assert re.search(r"<thead><tr>(?:<th[^>]*>[^<]*</th>){8}</tr></thead>", head)
    assert not re.search(r"\d\.\d+e-\s", page)   # never 'p=6.58e-' / '09'


def test_baseline_rows_leave_the_keys_they_do_not_use_blank():
    runs = annotate(wide_view(11, 36).runs)
    shown = readable_configs(select(runs, confidence=0.95).configs, runs).set_index("variant")
    for baseline in ("raw (baseline)", "untrained (baseline)"):
        assert (shown.loc[[baseline], ["margin", "lr", "w_pos"]] == "").all().all()
    assert (shown.loc[["batch_hard_soft"], "margin"] == "").all()   # it has no margin
    assert (shown.loc[["batch_hard"], "margin"] != "").all()


def test_p_values_are_compact():
    assert p_value(6.58e-9) == "6.6e-09"
    assert p_value(0.01234) == "0.012" and p_value(0.4567) == "0.46" and p_value(float("nan")) == "n/a"
    board = select(annotate(wide_view(11, 36).runs), confidence=0.95).leaderboard
    cells = display_leaderboard(board)["vs best (test MAP@R)"]
    assert cells.str.contains(r"\np=", regex=True).any()   # interval, then p on its own line


def test_palette_keeps_neighbours_distinct_for_16_variants():
    lab = _lab(np.array(variant_palette(16)))
    neighbours = np.linalg.norm(lab[1:] - lab[:-1], axis=1)
    pairs = np.linalg.norm(lab[:, None] - lab[None], axis=-1)[np.triu_indices(16, 1)]
    assert neighbours.min() >= 30 and pairs.min() >= 15
    styles = variant_styles(["b", "a", "raw", "lda"], baselines=["raw", "lda"])
    for name in ("raw", "lda"):   # baselines: grey, dashed, no marker, by the annotation only
        r, g, b = matplotlib.colors.to_rgb(styles[name]["color"])
        assert r == g == b and styles[name]["linestyle"] != "-" and styles[name]["marker"] is None
    assert styles["a"]["color"] != styles["b"]["color"] and styles["a"]["linestyle"] == "-"


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (n, 3) in [0, 1] -> CIE L*a*b* (D65), by the textbook formulas."""
    c = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], -1)


def test_the_layout_check_finds_a_legend_over_an_axis_and_a_missing_label():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="line")
    ax.legend(loc="center")
    problems = layout_problems(fig)
    plt.close(fig)
    assert any("overlaps" in p for p in problems)
    assert any("no x label" in p for p in problems) and any("no y label" in p for p in problems)


def test_one_learning_rate_gives_a_sentence_not_a_heatmap(tmp_path):
    runs = annotate(pd.DataFrame([run_row(f"h{m}{s}", seed=s, val=0.5 + m, test=0.4, margin=m)
                                  for m in (0.1, 0.2) for s in (0, 1)]))
    figures = {f.name: f for f in sensitivity_figures(runs, out_dir=tmp_path, styles={},
                                                       confidence=0.95, references={})}
    assert figures["sensitivity_margin_lr"].png is None
    assert "single learning rate (0.001)" in figures["sensitivity_margin_lr"].reason
    assert figures["map_vs_margin"].png is not None and not figures["map_vs_margin"].problems


def test_verdict_names_untuned_keys_the_ceiling_and_why_validation_is_above_test():
    runs = annotate(wide_view(4, 36).runs.assign(epochs=20))
    board = select(runs, confidence=0.95).leaderboard
    answer = verdict(board, runs, ideal=0.95, class_counts={"validation": 24, "test": 36})
    assert answer.headline[-1].startswith("Not covered: the grid held epochs 20")
    assert "The ideal metric of this dataset reaches test MAP@R 0.950" in answer.text
    assert "(24 validation vs 36 test classes)" in answer.text   # val is 0.1 above test here
    plain = verdict(board, runs)
    assert "ideal metric" not in plain.text
