"""SeaKR eigen score parity against ``seakr_eigen.json``.

The fixture is THU-KEG/SeaKR @d75fe70 ``LLMEngine._compute_eigen_score`` (float32) on five
20 × 64 matrices. :func:`dynaprag.dynamic.methods.seakr.eigen.eigen_score` (float32, the reference's
arithmetic) must match all five at 1e-4 relative. (A float64 version matched the four
well-conditioned ones and missed the near-identical-samples case by ~3.8e-4 relative, the size
of the reference's own float32 rounding there; SeaKR's θ was read against the float32 values.)
"""
from __future__ import annotations

import math

import pytest
import torch

from dynaprag.dynamic.methods.seakr import eigen

from .parity import assert_close, params

FIXTURE = "seakr_eigen.json"
CASES = params(FIXTURE, lambda d: d["cases"], lambda c: f"{c['index']}-{c['kind'].split(' (')[0]}")


def _z(case: dict) -> torch.Tensor:
    z = torch.tensor(case["Z"], dtype=torch.float32)
    assert tuple(z.shape) == (case["k"], case["d"])
    return z


@pytest.mark.parametrize("case", CASES)
def test_faithful_float32_eigen_score(case):
    assert_close([eigen.eigen_score(_z(case), case["alpha"])], [case["eigen_score"]], what="eigen score")


def test_blank_samples_are_dropped():
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    texts = ["a.", "  ", "b.", "c."]
    assert eigen.samples_eigen_score(texts, z) == eigen.eigen_score(z[[0, 2, 3]])
    assert eigen.samples_eigen_score(["", " "], z[:2]) is None


def test_identical_samples_score_log_alpha():
    assert eigen.eigen_score(torch.ones(5, 16) * 3.0) == pytest.approx(math.log(1e-3), rel=1e-5)
