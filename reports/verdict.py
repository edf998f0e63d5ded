"""The report's answer first: what to use, by how much it leads, how sure, what was not covered.

`verdict(board, runs)` reads the leaderboard (reports/leaderboard.py) by column name
(rank, kind, variant, config, *_mean/_low/_high/_n, paired_*, vs_baseline_*), so a
change of statistical unit there (e.g. fold means) carries through. It gives:
- `headline`: two or three short sentences: the variant to use and its chosen values;
  its lead on test MAP@R over the runner-up and over the best baseline, with intervals;
  how sure (Holm-adjusted p); the keys the grid held at one value;
- `text`: the detail (every comparison, significantly worse / better after Holm,
  the ideal-metric ceiling where the store has one, why validation is above test);
- `warning` when no trained variant beats the best baseline on test (paired mean
  difference of test MAP@R over matched units <= 0 for every selected variant), or
  when a classical baseline (lda, nca, pca_whiten) has a mean test MAP@R above every
  trained variant's (named with its paired gap to the best variant);
- one table row (tables/verdict.csv, which `read_warning` reads back for the command line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.results import DATA_KEYS, DEFAULTS
from reports.formatting import bounds, interval, number, p_value
from reports.stats import LOW_POWER_N
from reports.variants import UNIT_COLUMNS, is_classical, unused_keys

ALPHA = 0.05
VERDICT_CSV = "verdict.csv"
VAL_ABOVE_TEST = 0.05   # validation MAP@R this far above test gets the sentence explaining why
# Keys that name what is compared (the variant) or how it is measured, not a hyper-parameter.
NOT_HYPERPARAMETERS = ("loss", "baseline", "metric", "weighting", "id_variant", "ce", "ce_input", "encoder",
                       "image_shape", "eval_every", "margin_schedule", "lr_schedule", "mining")
FIRST_NAMED = ("lr", "epochs", "sampler_p", "sampler_k", "embedding_dim", "width", "hidden_layers",
               "margin")
HEADLINE_KEYS = 5


@dataclass(frozen=True)
class Verdict:
    text: str              # the detail paragraph
    warning: str | None    # no trained variant beats the best baseline, or a classical one beats them all
    table: pd.DataFrame    # one row: the numbers behind the text
    power: str = ""        # a note for the leaderboard when the tests have few units
    headline: tuple[str, ...] = field(default=())   # the answer: two or three short sentences


def _power_note(n: int) -> str:
    return (f" Only n = {n} matched units: below {LOW_POWER_N} a paired test has "
            "little power (a difference that is not significant is no evidence of no difference)."
            if n < LOW_POWER_N else "")


def _significant(low: float, high: float) -> bool:
    return not math.isnan(low) and (low > 0 or high < 0)


def _outcome(row: dict) -> str:
    """The verdict row's paired difference to the baseline -> 'its paired difference is ...'."""
    n, diff, low, high, p = row["n_units"], row["diff"], row["low"], row["high"], row["p"]
    if n == 0 or math.isnan(diff):
        return "no unit of the best variant matches one of the baseline's"
    sig = _significant(low, high)
    outcome = ("beats the baseline significantly" if sig and diff > 0 else
               "is significantly worse than the baseline" if sig else
               ("beats" if diff > 0 else "does not beat") + " the baseline on average"
               + (", not significantly" if not math.isnan(low) else ""))
    return (f"its paired difference is {diff:+.3f} (95% t-interval {bounds(low, high)}, "
            f"p = {p_value(p)}, n = {n}): it {outcome}")


def _lead(name: str, diff: float, low: float, high: float) -> str:
    """best - other on test MAP@R -> 'leads <name> by 0.018 [+0.004, +0.032]'."""
    if math.isnan(diff):
        return f"cannot be paired with {name}"
    verb = "leads" if diff >= 0 else "trails"
    ci = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
    return f"{verb} {name} by {abs(diff):.3f}{ci}"


def single_value_keys(runs: pd.DataFrame | None) -> dict[str, object]:
    """annotated runs -> {hyper-parameter: its one value} for the keys the trained runs that use
    them all held at one value (FIRST_NAMED first, then by name)."""
    if runs is None or runs.empty or "baseline" not in runs:
        return {}
    trained = runs[~runs["is_baseline"].astype(bool)]
    if trained.empty:
        return {}
    keys = [k for k in DEFAULTS if k in trained.columns and k not in DATA_KEYS
            and k not in UNIT_COLUMNS and k not in NOT_HYPERPARAMETERS]
    values: dict[str, set] = {k: set() for k in keys}
    for _, row in trained.drop_duplicates("config_key").iterrows():
        unused = unused_keys(row)
        for k in keys:
            if k not in unused:
                values[k].add(row[k])
    single = {k: next(iter(v)) for k, v in values.items() if len(v) == 1}
    order = [k for k in FIRST_NAMED if k in single] + sorted(k for k in single if k not in FIRST_NAMED)
    return {k: single[k] for k in order}


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _not_covered(single: dict) -> tuple[str, str]:
    """{key: value} -> (the headline sentence, the detail sentence listing every key)."""
    if not single:
        return "", ""
    named = [f"{k} {_value(v)}" for k, v in list(single.items())[:HEADLINE_KEYS]]
    rest = len(single) - len(named)
    head = ("Not covered: the grid held " + ", ".join(named)
            + (f" and {rest} other key(s) (listed below)" if rest else "")
            + " at one value each, so the ranking holds for those values only.")
    detail = ("Keys at one value for every trained variant that uses them: "
              + ", ".join(f"{k} = {_value(v)}" for k, v in single.items()) + ".")
    return head, detail


def classical_warning(trained: pd.DataFrame, bases: pd.DataFrame) -> tuple[list[str], str] | None:
    """leaderboard rows of the trained variants (best first) and of the baselines -> (the classical
    baselines whose mean test MAP@R is above every trained variant's, the warning naming the best
    of them and its paired gap to the best variant), or None when there is none."""
    top = trained["test_map_at_r_mean"].max()
    above = bases[bases["variant"].map(is_classical) & (bases["test_map_at_r_mean"] > top)]
    if above.empty:
        return None
    above = above.sort_values(["test_map_at_r_mean", "variant"], ascending=[False, True])
    base, best = above.iloc[0], trained.iloc[0]
    n = int(base["paired_n"])
    p_text = "n/a" if math.isnan(base["paired_p"]) else f"{base['paired_p']:.3g}"
    diff = "n/a" if math.isnan(base["paired_diff"]) else f"{base['paired_diff']:+.3f}"
    others = above["variant"].iloc[1:].tolist()
    text = (f"A classical linear metric beats every trained variant on test: {base['variant']} "
            f"({base['config']}), fitted on the training classes only, reaches test MAP@R "
            + interval(base["test_map_at_r_mean"], base["test_map_at_r_low"],
                       base["test_map_at_r_high"])
            + f" against at most {number(top)} for a trained variant; its paired difference to "
            f"the best variant {best['variant']} is {diff} (95% t-interval "
            f"{bounds(base['paired_low'], base['paired_high'])}, p = {p_text}, n = {n})."
            + (f" Also above every trained variant: {', '.join(others)}." if others else "")
            + " The losses learn no better metric than a linear map fitted in seconds: the "
            "leaderboard ranks how well each finds one, not what a learned metric adds.")
    return above["variant"].tolist(), text


def verdict(board: pd.DataFrame, runs: pd.DataFrame | None = None, *, ideal: float | None = None,
            class_counts: dict | None = None,
            grid_baselines: tuple[str, ...] | None = None) -> Verdict:
    """leaderboard, annotated runs (for the keys held at one value), the ideal metric's test
    MAP@R where the store has it, {"validation": n, "test": n} class counts where known, the
    baselines the store's grid runs (None: unknown) -> Verdict (headline, detail, warning or
    None, one-row table)."""
    trained = board[board["kind"] == "variant"] if not board.empty else board
    bases = board[board["kind"] == "baseline"] if not board.empty else board
    row = {"best_variant": None, "best_baseline": None, "n_units": 0, "diff": math.nan,
           "low": math.nan, "high": math.nan, "p": math.nan, "beats_baseline": None,
           "significantly_worse_after_holm": "", "significantly_better_after_holm": "",
           "classical_beats_all": "", "warning": ""}
    if trained.empty:
        text = ("No trained variant has a configuration whose units all finished: "
                "there is nothing to select yet (see What is missing).")
        return Verdict(text, None, pd.DataFrame([row]), headline=(text,))
    best = trained.iloc[0]
    row["best_variant"] = best["variant"]
    chosen = ("" if best["config"] == "(only configuration)"
              else " with " + best["config"].replace("=", " = "))
    test = interval(best["test_map_at_r_mean"], best["test_map_at_r_low"],
                    best["test_map_at_r_high"])
    lines = [f"Best variant on validation: {best['variant']}{chosen}, test MAP@R {test} over "
             f"{best['test_map_at_r_n']} units."]
    leads = []
    others = trained.iloc[1:]
    if not others.empty:
        second = others.iloc[0]
        leads.append(_lead(f"the runner-up, {second['variant']},", -second["paired_diff"],
                           -second["paired_high"], -second["paired_low"]))
    warning = None
    if bases.empty:
        lines.append(_no_baseline(runs, grid_baselines))
    else:
        base = bases.iloc[0]
        n, diff = int(best["vs_baseline_n"]), float(best["vs_baseline_diff"])
        row.update(best_baseline=base["variant"], n_units=n, diff=diff,
                   low=float(best["vs_baseline_low"]), high=float(best["vs_baseline_high"]),
                   p=float(best["vs_baseline_p"]), beats_baseline=bool(diff > 0))
        leads.append(_lead(f"the best baseline, {base['variant']},", diff, row["low"],
                           row["high"]))
        lines.append(f"Against the best baseline, {base['variant']} (test MAP@R "
                     f"{number(base['test_map_at_r_mean'])}), " + _outcome(row) + ".")
        beaten_by = trained[trained["vs_baseline_diff"] > 0]["variant"].tolist()
        if beaten_by and not diff > 0:
            lines[-1] += (" Trained variants above it on test on average: "
                          + ", ".join(beaten_by) + ".")
        if not beaten_by and trained["vs_baseline_diff"].notna().any():
            warning = (f"No trained variant beats the best baseline ({base['variant']}, test MAP@R "
                       f"{number(base['test_map_at_r_mean'])}) on test: training did not improve "
                       "on it for the held-out classes, so the leaderboard ranks how much each "
                       "loss changes the features, not how much it improves them.")
        classical = classical_warning(trained, bases)
        if classical is not None:
            row["classical_beats_all"] = "; ".join(classical[0])
            warning = f"{warning} {classical[1]}" if warning else classical[1]
        row["warning"] = warning or ""
        lines[-1] += _power_note(n)
    if len(leads) == 2 and leads[0].split()[0] == leads[1].split()[0]:
        leads[1] = leads[1].split(" ", 1)[1]   # 'leads A by x and B by y': the verb once
    headline = [f"Use {best['variant']}{chosen}: on test MAP@R ({number(best['test_map_at_r_mean'])})"
                f" it " + " and ".join(leads) + " (95% intervals of the difference, it minus the other)."
                if leads else f"Use {best['variant']}{chosen} (test MAP@R {test}); nothing to "
                "compare it with."]
    sure = []
    if others.empty:
        lines.append("No other variant to compare with.")
    else:
        holm_p = others["paired_p_holm"]
        worse = others[(holm_p < ALPHA) & (others["paired_diff"] < 0)]["variant"].tolist()
        better = others[(holm_p < ALPHA) & (others["paired_diff"] > 0)]["variant"].tolist()
        same = [v for v in others["variant"] if v not in worse and v not in better]
        row["significantly_worse_after_holm"] = "; ".join(worse)
        row["significantly_better_after_holm"] = "; ".join(better)
        lines.append(f"On test MAP@R after Holm's correction over {len(others)} comparison(s) "
                     f"(5% family-wise), significantly worse than {best['variant']}: "
                     + (", ".join(worse) or "none") + "; significantly better: "
                     + (", ".join(better) or "none") + "; not significantly different: "
                     + (", ".join(same) or "none") + ".")
        second = others.iloc[0]
        runner = (f"the runner-up is {'significantly worse' if second['variant'] in worse else 'significantly better' if second['variant'] in better else 'not significantly different'}"
                  f" (Holm p = {p_value(second['paired_p_holm'])})")
        sure.append(f"{len(worse)} of {len(others)} other variant(s) are significantly worse after "
                    f"Holm's correction; {runner}")
    if not bases.empty and not math.isnan(row["p"]):
        sure.append(f"against the best baseline p = {p_value(row['p'])}")
    if sure:
        n_best = int(best["test_map_at_r_n"])
        headline.append("How sure: " + "; ".join(sure) + f" (n = {n_best} units"
                        + (f", below {LOW_POWER_N}: little power" if n_best < LOW_POWER_N else "")
                        + ").")
    covered_head, covered_detail = _not_covered(single_value_keys(runs))
    if covered_head:
        headline.append(covered_head)
        lines.append(covered_detail)
    lines += _ceiling(best, bases, ideal) + _val_vs_test(best, class_counts or {})
    n_best = int(best["test_map_at_r_n"])
    power = (f"Note: the best variant has n = {n_best} units; below {LOW_POWER_N} the "
             "paired tests have little power." if n_best < LOW_POWER_N else "")
    return Verdict(" ".join(lines), warning, pd.DataFrame([row]), power, tuple(headline))


def _ceiling(best, bases: pd.DataFrame, ideal: float | None) -> list[str]:
    """The ideal metric's test MAP@R (the ceiling) and how much of the gap the best variant closes."""
    if ideal is None or not math.isfinite(ideal):
        return []
    text = (f"The ideal metric of this dataset reaches test MAP@R {ideal:.3f} (the ceiling); the "
            f"best variant is at {number(best['test_map_at_r_mean'])}")
    if not bases.empty:
        floor = float(bases.iloc[0]["test_map_at_r_mean"])
        if ideal > floor:
            closed = (float(best["test_map_at_r_mean"]) - floor) / (ideal - floor)
            text += f", {closed:.0%} of the way from the best baseline ({floor:.3f}) to it"
    return [text + "."]


def _val_vs_test(best, counts: dict) -> list[str]:
    """A sentence on why validation MAP@R is far above test, when it is."""
    val, test = float(best["val_map_at_r_mean"]), float(best["test_map_at_r_mean"])
    if not (math.isfinite(val) and math.isfinite(test)) or val - test <= VAL_ABOVE_TEST:
        return []
    n_val, n_test = counts.get("validation"), counts.get("test")
    if n_val and n_test:
        which = f"different classes, and different numbers of them ({n_val} validation vs {n_test} test classes)"
    elif n_test:
        which = f"different classes ({n_test} test classes; the validation classes are others)"
    else:
        which = "different classes"
    return [f"Validation MAP@R ({val:.3f}) is well above test ({test:.3f}) because they are measured "
            f"on {which}: MAP@R depends on which classes compete, and falls as more do, so compare "
            "variants within a split, never validation with test."]


def _no_baseline(runs: pd.DataFrame | None, grid_baselines: tuple[str, ...] | None) -> str:
    """The sentence for a store without a finished baseline run: why, and what to do."""
    if grid_baselines == ():
        return ("This store has no baseline run: its grid runs none ([baselines] include = []); "
                "list some there (e.g. include = [\"raw\", \"untrained\"]) and run it again.")
    stored = (runs is not None and "is_baseline" in runs and runs["is_baseline"].astype(bool).any())
    why = ("its baseline runs failed or diverged (What is missing says why)" if stored else
           "its baseline runs are not in the store (deleted, or not run yet; What is missing "
           "lists the grid's runs that are absent)")
    return (f"This store has no finished baseline run: {why}; run the same grid again to run "
            f"them (only the missing runs will run).")


def read_warning(report_dir: str | Path) -> str | None:
    """A written report's directory -> its warning (tables/verdict.csv), or None."""
    path = Path(report_dir) / "tables" / VERDICT_CSV
    if not path.is_file():
        return None
    value = pd.read_csv(path, keep_default_na=False)["warning"].iloc[0]
    return str(value) or None
