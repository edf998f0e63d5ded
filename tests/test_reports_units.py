"""Unit tests of reports/: statistics, selection on validation, CIs over finished seeds, curves.

`fake_view` builds a small in-memory store (the columns of ARCHITECTURE.md) for the
cases a real grid cannot produce on demand; tests/test_reports.py runs a real one.
"""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from reports.build import write_report
from reports.curves import MONITORS, curve_figures, seed_band
from reports.leaderboard import select
from reports.sensitivity import sensitivity_figures, swept_axes
from reports.stats import mean_ci, paired_test, t_half_width
from reports.store_view import StoreView
from reports.variants import annotate, config_columns, variant_label

matplotlib.use("Agg")
METRICS = [f"{split}_{m}" for split in ("val", "test")
           for m in ("precision_at_1", "r_precision", "map_at_r", "nmi")]


def run_row(run_id: str, *, seed: int, val: float, test: float, status: str = "finished",
            **config) -> dict:
    """One runs.parquet row; val/test set every validation/test metric (NaN unless finished)."""
    ok = status == "finished"
    row = {"run_id": run_id, "dataset": "digits", "loss": "batch_hard", "weighting": "fixed",
           "margin": 0.2, "lr": 1e-3, "w_pos": 1.0, **config, "seed": seed, "status": status,
           "error": None if status != "failed" else "RuntimeError: boom",
           "diverged_step": 7 if status == "diverged" else None,
           "diverged_component": "triplet" if status == "diverged" else None,
           "wall_time_s": 1.0, "train_time_s": 0.9}
    row.update({m: (val if m.startswith("val") else test) if ok else np.nan for m in METRICS})
    return row


def fake_view(*, seeds=(0, 1, 2), steps_per_run: int = 12, seed: int = 0) -> StoreView:
    """A small store: batch_hard and batch_all over margin x lr, combined[fixed] over w_pos."""
    rng = np.random.default_rng(seed)
    configs = [dict(loss=loss, margin=m, lr=lr) for loss, m, lr in
               itertools.product(("batch_hard", "batch_all"), (0.1, 0.3), (1e-3, 1e-2))]
    configs += [dict(loss="combined", margin=m, w_pos=w) for m, w in
                itertools.product((0.1, 0.3), (0.5, 1.0))]
    runs, steps, embeddings = [], [], {}
    for i, (config, s) in enumerate(itertools.product(configs, seeds)):
        run_id = f"run{i:03d}"
        quality = rng.uniform(0.3, 0.8)
        runs.append(run_row(run_id, seed=s, val=quality, test=quality + rng.normal(0, 0.03),
                            **config))
        for step in range(steps_per_run):
            row = {"run_id": run_id, "epoch": step // 4, "step": step, "lr": 1e-3, "margin": 0.2,
                   "loss_triplet": np.exp(-step / 5) + rng.normal(0, 0.01), "weight_triplet": 1.0,
                   "gradnorm_triplet": np.nan, "active_fraction": rng.uniform(),
                   "pos_ratio": rng.uniform(), "violation_rate": rng.uniform()}
            if config["loss"] == "combined":
                row.update(loss_ce_pos=0.5, loss_ce_neg=0.3, weight_ce_pos=config["w_pos"],
                           weight_ce_neg=1.0, gradnorm_triplet=1.0, gradnorm_ce_pos=0.5,
                           gradnorm_ce_neg=0.2)
            row["loss"] = sum(v for k, v in row.items() if k.startswith("loss_"))
            steps.append(row)
        labels = np.repeat([7, 8, 9], 20)
        embeddings[run_id] = ((rng.normal(size=(60, 4)) + labels[:, None]).astype(np.float32),
                              labels.astype(np.int64))

    def get(run_id):
        if run_id not in embeddings:
            raise ValueError(f"run_id {run_id!r}: no embeddings stored")
        return embeddings[run_id]

    return StoreView(runs=pd.DataFrame(runs), steps=pd.DataFrame(steps),
                     epochs=pd.DataFrame(columns=["run_id", "epoch"]), grid_text="[base]\n",
                     embeddings=get)


# ---------------------------------------------------------------- statistics
@pytest.mark.parametrize("n", [2, 3, 7])
def test_mean_ci_is_the_student_t_interval(n):
    x = np.random.default_rng(n).normal(0.5, 0.1, size=n)
    ci = mean_ci(x, confidence=0.95)
    low, high = st.t.interval(0.95, n - 1, loc=x.mean(), scale=st.sem(x))
    assert (ci.n, ci.mean) == (n, pytest.approx(x.mean()))
    assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))


def test_mean_ci_drops_nan_and_is_undefined_below_two_values():
    ci = mean_ci([0.4, np.nan, 0.6], confidence=0.95)
    assert ci.n == 2 and ci.mean == pytest.approx(0.5)
    one = mean_ci([0.4, np.nan], confidence=0.95)
    assert one.n == 1 and one.mean == pytest.approx(0.4) and np.isnan(one.low)
    assert mean_ci([], confidence=0.95).n == 0


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_mean_ci_rejects_bad_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=confidence)


def test_t_half_width_matches_scipy_and_is_nan_for_one_seed():
    half = t_half_width([0.1, 0.2, 0.3], [1, 2, 5], confidence=0.95)
    assert np.isnan(half[0])
    assert half[1] == pytest.approx(st.t.ppf(0.975, 1) * 0.2 / np.sqrt(2))
    assert half[2] == pytest.approx(st.t.ppf(0.975, 4) * 0.3 / np.sqrt(5))


def test_paired_test_is_ttest_rel_over_common_finite_seeds():
    a = {0: 0.50, 1: 0.61, 2: 0.55, 3: 0.70, 4: np.nan}
    b = {1: 0.58, 2: 0.49, 3: 0.66, 4: 0.40, 5: 0.9}
    result = paired_test(a, b, confidence=0.95)
    expected = st.ttest_rel([0.61, 0.55, 0.70], [0.58, 0.49, 0.66])
    assert result.n == 3 and result.note == ""
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.mean_diff == pytest.approx(np.mean([0.03, 0.06, 0.04]))
    # by hand: d = (0.03, 0.06, 0.04), sd 0.0152753, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.0152753 / np.sqrt(3)
    assert (result.low, result.high) == (pytest.approx(0.043333 - half, abs=1e-5),
                                         pytest.approx(0.043333 + half, abs=1e-5))


@pytest.mark.parametrize("b", [{0: 0.5}, {7: 0.5, 8: 0.4}, {0: np.nan, 1: 0.3}], ids=["one", "none", "nan"])
def test_paired_test_is_na_below_two_common_seeds(b):
    result = paired_test({0: 0.6, 1: 0.7}, b, confidence=0.95)
    assert result.n < 2 and np.isnan(result.p_value) and result.note.startswith("n/a")


# ----------------------------------------------------------------- selection
def test_variant_names_include_the_weighting_only_for_combined_objectives():
    assert variant_label(pd.Series({"loss": "batch_hard", "weighting": "fixed"})) == "batch_hard"
    assert variant_label(pd.Series({"loss": "combined", "weighting": "dwa"})) == "combined [dwa]"
    assert variant_label(pd.Series({"loss": "triplet_ce", "weighting": "fixed",
                                    "id_variant": "batch_all"})) == "triplet_ce(batch_all) [fixed]"


def test_selection_uses_validation_never_test():
    # margin 0.1: best on validation, worst on test; margin 0.3 the opposite.
    runs = pd.DataFrame([run_row(f"a{s}", seed=s, val=0.8, test=0.2, margin=0.1) for s in range(3)]
                        + [run_row(f"b{s}", seed=s, val=0.3, test=0.9, margin=0.3) for s in range(3)])
    board = select(annotate(runs), confidence=0.95).leaderboard
    assert board["config"].tolist() == ["margin=0.1"]
    assert board["test_map_at_r_mean"].iloc[0] == pytest.approx(0.2)


def test_a_configuration_is_selectable_only_when_all_its_units_finished(tmp_path):
    # batch_hard margin 0.1 is best on validation but seed 2 failed: margin 0.3 is selected
    runs = [run_row(f"h{s}", seed=s, val=0.9, test=0.6, margin=0.1,
                    status="failed" if s == 2 else "finished") for s in range(4)]
    runs += [run_row(f"m{s}", seed=s, val=0.7, test=0.5 + s / 100, margin=0.3) for s in range(4)]
    runs += [run_row(f"a{s}", seed=s, val=0.5, test=0.4 + s / 100, loss="batch_all")
             for s in range(3)]   # seed 3 never run: batch_all has no selectable configuration
    selection = select(annotate(pd.DataFrame(runs)), confidence=0.95)
    board = selection.leaderboard.set_index("variant")
    assert board.index.tolist() == ["batch_hard"]
    best = board.loc["batch_hard"]
    assert best["config"] == "margin=0.3" and best["units_finished"] == "4/4"
    kept = np.array([0.50, 0.51, 0.52, 0.53])
    low, high = st.t.interval(0.95, 3, loc=kept.mean(), scale=st.sem(kept))
    assert (best["test_map_at_r_low"], best["test_map_at_r_high"]) == (pytest.approx(low),
                                                                      pytest.approx(high))
    configs = selection.configs.set_index(["variant", "config"])
    assert configs.loc[("batch_hard", "margin=0.1"), "units_missing"] == "seed 2"
    assert configs.loc[("batch_all", "(only configuration)"), "units_missing"] == "seed 3"
    page = write_report(StoreView(runs=pd.DataFrame(runs), steps=pd.DataFrame(),
                                  epochs=pd.DataFrame(), grid_text="",
                                  embeddings=fake_view().embeddings),
                        tmp_path, umap_epochs=5, umap_max_points=10, random_state=0,
                        max_curve_points=10).read_text()
    assert "is not selectable: no finished run for seed 2" in page
    assert "Variant batch_all has no configuration with every (fold, seed) unit finished" in page


def test_result_columns_a_store_adds_do_not_split_configurations():
    runs = pd.DataFrame([run_row(f"h{s}", seed=s, val=0.7, test=0.6, cpu_time_s=1.0 + s)
                         for s in range(3)])
    assert annotate(runs)["config_key"].nunique() == 1
    assert "cpu_time_s" not in config_columns(runs) and "margin" in config_columns(runs)


def test_a_variant_without_finished_runs_is_left_out_of_the_leaderboard():
    runs = pd.DataFrame([run_row("h0", seed=0, val=0.7, test=0.6),
                         run_row("x0", seed=0, val=0.0, test=0.0, loss="batch_all", status="failed")])
    board = select(annotate(runs), confidence=0.95).leaderboard
    assert board["variant"].tolist() == ["batch_hard"]
    assert board["paired_note"].iloc[0].startswith("reference")


# ---------------------------------------------------------- curves, figures
def test_seed_band_is_mean_and_t_interval_over_runs_per_step_bin():
    steps = pd.DataFrame({"run_id": np.repeat(["r0", "r1", "r2"], 4), "variant": "v",
                          "step": np.tile(np.arange(4), 3),
                          "loss": [1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 12.0]})
    band = seed_band(steps, "loss", hue="variant", confidence=0.95, max_points=2)
    assert band["step"].tolist() == [0, 2]   # two bins of two steps
    per_run = np.array([[1.5, 2.5, 3.5], [3.5, 4.5, 8.5]])   # bin means of each run
    for row, values in zip(band.itertuples(), per_run):
        low, high = st.t.interval(0.95, 2, loc=values.mean(), scale=st.sem(values))
        assert (row.mean, row.low, row.high, row.n) == (pytest.approx(values.mean()),
                                                       pytest.approx(low), pytest.approx(high), 3)


def test_curves_without_monitor_columns_or_combined_runs_say_why(tmp_path):
    steps = fake_view(seeds=(0, 1), steps_per_run=4).steps
    steps = steps[steps["run_id"].isin(["run000", "run001"])].drop(columns=list(MONITORS))
    figures = curve_figures(steps.assign(variant="batch_hard"), out_dir=tmp_path,
                            styles={"batch_hard": "C0"}, confidence=0.95, max_points=10)
    reasons = {f.name: f.reason for f in figures if f.png is None}
    assert [f.name for f in figures if f.png is not None] == ["loss_curves"]
    assert "active_fraction" in reasons["monitors"]
    assert "no combined objective" in reasons["components"]
    assert "gradient norms" in reasons["grad_norms"]


def test_sensitivity_figures_draw_weight_heatmaps_for_combined(tmp_path):
    runs = annotate(fake_view(seeds=(0, 1)).runs)
    figures = {f.name: f for f in sensitivity_figures(runs, out_dir=tmp_path, confidence=0.95,
                                                       styles=_palette(runs),
                                                       references={"raw (baseline)": 0.5})}
    assert set(figures) == {"sensitivity_margin_lr", "sensitivity_weights", "map_vs_margin"}
    for name, fig in figures.items():
        assert fig.png.startswith(b"\x89PNG") and (tmp_path / f"{name}.svg").stat().st_size > 0


def test_write_report_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="umap_epochs"):
        write_report(fake_view(), tmp_path, umap_epochs=0, umap_max_points=10, random_state=0,
                     max_curve_points=10)


def test_a_rebuild_leaves_no_stale_figure(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "umap.png").write_bytes(b"old")
    view = fake_view(seeds=(0,))
    view = StoreView(runs=view.runs.iloc[:0], steps=view.steps.iloc[:0], epochs=view.epochs,
                     grid_text="", embeddings=view.embeddings)
    write_report(view, tmp_path, umap_epochs=5, umap_max_points=10, random_state=0,
                 max_curve_points=10)
    assert not (tmp_path / "figures" / "umap.png").exists()


def test_an_empty_store_still_gives_a_report_that_says_so(tmp_path):
    empty = StoreView(runs=pd.DataFrame(), steps=pd.DataFrame(), epochs=pd.DataFrame(),
                      grid_text="", embeddings=lambda run_id: (_ for _ in ()).throw(ValueError()))
    page = write_report(empty, tmp_path, umap_epochs=5, umap_max_points=10, random_state=0,
                        max_curve_points=10).read_text()
    assert "holds no run yet" in page and "<img" not in page
    assert page.count("Not drawn:") == page.count("<h3 ") == 11
    assert pd.read_csv(tmp_path / "tables" / "leaderboard.csv").empty


def _palette(runs):
    return {v: f"C{i}" for i, v in enumerate(sorted(runs["variant"].unique()))}


def test_the_protocol_names_each_data_file_and_its_fingerprint():
    from reports.protocol import protocol_items

    fp = "ab" * 32
    runs = annotate(pd.DataFrame([
        run_row("r0", seed=0, val=0.5, test=0.4, dataset="npz", npz_path="/d/x.npz",
                data_fingerprint=fp),
        run_row("r1", seed=1, val=0.5, test=0.4, dataset="npz", npz_path="/d/x.npz",
                data_fingerprint=fp)]))
    items = dict(protocol_items(runs, {}))
    assert items["Data files"] == f"/d/x.npz (sha256 {fp[:16]}...)"
    builtin = annotate(pd.DataFrame([run_row("r0", seed=0, val=0.5, test=0.4)]))
    assert dict(protocol_items(builtin, {}))["Data files"] == "none (built-in datasets)"


def _folded_runs(values: dict) -> pd.DataFrame:
    """{(loss, fold, seed): test MAP@R} -> runs rows of a 3-fold fixed-test store."""
    return pd.DataFrame([run_row(f"{loss}{fold}{seed}", seed=seed, val=v, test=v, loss=loss,
                                 fold=fold, class_folds=3, split_protocol="fixed_test")
                         for (loss, fold, seed), v in values.items()])


def test_with_folds_the_unit_is_the_fold_mean_and_n_the_number_of_folds():
    rng = np.random.default_rng(3)
    fold_effect = {0: 0.0, 1: 0.1, 2: -0.05}              # folds differ far more than seeds
    values = {(loss, f, s): 0.5 + (0.02 if loss == "batch_all" else 0.0) + fold_effect[f]
              + rng.normal(0, 0.005) for loss in ("batch_hard", "batch_all")
              for f in range(3) for s in range(3)}
    selection = select(annotate(_folded_runs(values)), confidence=0.95)
    board = selection.leaderboard.set_index("variant")
    assert selection.by_fold and selection.unit_name == "fold"
    means = {loss: [np.mean([values[(loss, f, s)] for s in range(3)]) for f in range(3)]
             for loss in ("batch_hard", "batch_all")}
    expected = mean_ci(means["batch_all"], confidence=0.95)
    assert board.loc["batch_all", "test_map_at_r_n"] == 3
    assert board.loc["batch_all", "test_map_at_r_low"] == pytest.approx(expected.low)
    paired = paired_test(dict(enumerate(means["batch_hard"])), dict(enumerate(means["batch_all"])),
                         confidence=0.95)
    assert board.loc["batch_hard", "paired_n"] == 3
    assert board.loc["batch_hard", "paired_p"] == pytest.approx(paired.p_value)
    # nine (fold, seed) runs treated as independent would claim a far smaller p
    runs9 = st.ttest_rel([values[("batch_hard", f, s)] for f in range(3) for s in range(3)],
                         [values[("batch_all", f, s)] for f in range(3) for s in range(3)])
    assert paired.p_value > runs9.pvalue


def test_old_stores_without_split_protocol_read_as_rotated_folds():
    rows = _folded_runs({("batch_hard", f, s): 0.5 for f in (1, 2) for s in (0, 1)})
    rows = pd.concat([rows, pd.DataFrame([run_row("single", seed=0, val=0.5, test=0.5)])])
    runs = annotate(rows.drop(columns=["split_protocol"]))
    assert list(runs["split_protocol"]) == ["rotated"] * 4 + ["fixed_test"]


def memory_view() -> StoreView:
    """A small store: batch_hard and batch_all over memory_size {0, 2048} (margin, lr and memory_weight
    fixed), 2 seeds; the memory adds 0.1 to batch_all's validation MAP@R and nothing to batch_hard's."""
    runs, embeddings = [], {}
    rng = np.random.default_rng(3)
    for i, (loss, size, s) in enumerate(itertools.product(("batch_hard", "batch_all"), (0, 2048), (0, 1))):
        val = 0.5 + (0.1 if loss == "batch_all" and size else 0.0) + 0.01 * s
        runs.append(run_row(f"mem{i:02d}", seed=s, val=val, test=val - 0.05, loss=loss, memory_size=size,
                            memory_weight=1.0, memory_start_epoch=0))
        labels = np.repeat([0, 1, 2], 10)
        embeddings[f"mem{i:02d}"] = ((rng.normal(size=(30, 4)) + labels[:, None]).astype(np.float32),
                                     labels.astype(np.int64))
    return StoreView(runs=pd.DataFrame(runs), steps=pd.DataFrame(), epochs=pd.DataFrame(), grid_text="",
                     embeddings=lambda run_id: embeddings[run_id])


def test_a_swept_memory_size_gets_its_sensitivity_figure_and_table(tmp_path):
    from test_reports_layout import linear_projection

    view = memory_view()
    runs = annotate(view.runs)
    assert swept_axes(runs) == ["memory_size"]  # memory_weight is unused without a memory: one value
    figures = {f.name: f for f in sensitivity_figures(runs, out_dir=tmp_path, confidence=0.95,
                                                       styles=_palette(runs), references={})}
    drawn = figures["map_vs_memory_size"]
    assert drawn.png.startswith(b"\x89PNG") and not drawn.problems
    assert "memory size (0 = off)" in drawn.caption and drawn.title == "MAP@R against memory size (0 = off)"
    page = write_report(view, tmp_path / "report", umap_epochs=5, umap_max_points=100, random_state=0,
                        max_curve_points=10, umap_project=linear_projection).read_text()
    assert "id='map_vs_memory_size'" in page
    table = pd.read_csv(tmp_path / "report" / "tables" / "sensitivity_memory_size.csv")
    assert list(table.columns) == ["variant", "memory_size", "val_map_at_r_mean", "n_units"]
    cells = table.set_index(["variant", "memory_size"])["val_map_at_r_mean"]
    assert cells[("batch_all", 2048)] == pytest.approx(0.605) and cells[("batch_all", 0)] == pytest.approx(0.505)
    assert cells[("batch_hard", 2048)] == pytest.approx(cells[("batch_hard", 0)])
    assert (table["n_units"] == 2).all()


def test_a_key_with_one_value_per_variant_is_not_a_sensitivity_axis():
    runs = annotate(pd.DataFrame([run_row(f"k{i}{s}", seed=s, val=0.5, test=0.4, loss=loss, sampler_k=k)
                                  for i, (loss, k) in enumerate([("batch_hard", 4), ("batch_all", 8)])
                                  for s in (0, 1)]))
    assert swept_axes(runs) == []
