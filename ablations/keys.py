"""A run config's keys as the components declare them: `Key` (name, default, meaning, checks)
and the checks they share.

Each component declares the keys it reads beside its own code (a dataset in
ablations/data.py, ablations/nuisance.py, ablations/pose.py; an encoder in ablations/model.py;
a loss in ablations/loss_specs.py; offline mining in ablations/mining.py; a weighting method
in its class in losses/weighting); ablations/config.py declares the keys every run shares
and assembles the schema of one run from all of them. A key's type is that of its default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# A check: a valid value of the key's type -> "" when fine, else what is wrong, worded to
# follow "key 'NAME' " and precede ", got VALUE" (e.g. "must be >= 1").
Check = Callable[[Any], str]


@dataclass(frozen=True)
class Key:
    """One config key: its default (which also fixes its type), what it means, its checks."""

    name: str
    default: Any
    doc: str = ""
    checks: tuple[Check, ...] = ()
    # its valid values: a tuple, or a callable returning them (a live registry's names)
    choices: tuple[str, ...] | Callable[[], Iterable[str]] = ()
    plugin: bool = False  # also takes "package.module:name", the user's own component

    @property
    def type(self) -> type:
        return type(self.default)

    def valid_choices(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def problem(self, value: Any) -> str:
        """A value of the key's type -> "" or the first check's complaint."""
        for check in self.checks:
            if message := check(value):
                return message
        return ""


def at_least(bound: float, why: str = "") -> Check:
    """value >= bound; `why`, when given, is said in parentheses."""
    text = f"must be >= {bound}" + (f" ({why})" if why else "")
    return lambda value: "" if value >= bound else text


def above(bound: float) -> Check:
    return lambda value: "" if value > bound else f"must be > {bound}"


def within(low: float, high: float) -> Check:
    """low <= value <= high."""
    return lambda value: "" if low <= value <= high else f"must be in [{low}, {high}]"


def even(why: str) -> Check:
    return lambda value: "" if value % 2 == 0 else f"must be even ({why})"


POSITIVE = (at_least(1),)
NON_NEGATIVE = (at_least(0),)
UNIT_INTERVAL = (within(0, 1),)
MAX_SEED = 2**32 - 1  # numpy and torch take < 2**63, scikit-learn's KMeans (evaluation) < 2**32
SEED_RANGE: Check = lambda value: "" if 0 <= value <= MAX_SEED else (  # noqa: E731
    f"must be in [0, 2**32 - 1] = [0, {MAX_SEED}] (scikit-learn's KMeans takes no larger seed)")
TWO_POINTS = at_least(2, "a class with one point has no positive pair to retrieve")

# data_seed: read by every generated dataset (blobs, nuisance, pose), so declared once here
DATA_SEED = Key("data_seed", 0, "seed of the generated data (not of training)", (SEED_RANGE,))


def names(keys: Iterable[Key]) -> tuple[str, ...]:
    """Keys -> their names, in order."""
    return tuple(key.name for key in keys)


def merge(groups: Iterable[Iterable[Key]]) -> dict[str, Key]:
    """Key declarations of several components -> name -> Key, first declaration first; one name
    declared twice with other defaults or checks is a ValueError naming it."""
    out: dict[str, Key] = {}
    for group in groups:
        for key in group:
            if key.name in out and out[key.name] != key:
                raise ValueError(f"key {key.name!r} is declared twice, differently: {out[key.name]} and {key}; "
                                 f"components that share a key share one Key")
            out.setdefault(key.name, key)
    return out
