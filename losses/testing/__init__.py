"""Check your own loss: a conformance checker for triplet-loss code.

    from losses.testing import assert_conforms, check_loss
    report = check_loss(my_loss, as_="batch_all", metric="euclidean", margin=0.2)
    print(report.summary())            # verdict, plain-word diagnoses, failing batches
    assert_conforms(my_loss, as_="batch_hard", margin=0.3)   # in your own pytest

The battery (losses.testing.battery) holds batches built to expose bugs; the reference
is our own loss in float64; mismatches are explained by the known faults of
losses.testing.family (or the combining-step faults of losses.testing.targets).
"""

from .check import CaseResult, ConformanceReport, assert_conforms, check_loss
from .targets import VARIANT_NAMES

__all__ = ["CaseResult", "ConformanceReport", "VARIANT_NAMES", "assert_conforms", "check_loss"]
