"""Export's parity tolerance: rounding that grows with a value passes, a real difference does not."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from training.onnx_export import PARITY_ATOL, beyond_tolerance  # noqa: E402


def test_a_cell_state_of_100_may_differ_by_its_rounding_but_a_small_value_may_not():
    state = np.array([100.0, -98.1, 0.5], dtype=np.float32)
    assert beyond_tolerance(state, state) <= 0
    # music epoch 8's cell state: 1.37e-4 apart where |c| ~ 100 (its logits: 1.4e-5)
    assert beyond_tolerance(state, state + np.array([1.37e-4, -1.2e-4, 0], dtype=np.float32)) <= PARITY_ATOL
    # the same difference on a value of 0.5 (a logit, a bounded h) is past the limit
    assert beyond_tolerance(state, state + np.array([0, 0, 1.37e-4], dtype=np.float32)) > PARITY_ATOL
    # and an export bug, say a gate's bias dropped, is far past it at any size
    assert beyond_tolerance(state, state * 1.01) > PARITY_ATOL
