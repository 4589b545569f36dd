"""Export's parity tolerance: rounding that grows with a value passes, a real difference does not."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from training.onnx_export import PARITY_ATOL, ParityCheck, beyond_tolerance  # noqa: E402


def test_a_cell_state_of_100_may_differ_by_its_rounding_but_a_small_value_may_not():
    state = np.array([100.0, -98.1, 0.5], dtype=np.float32)
    assert beyond_tolerance(state, state) <= 0
    # music epoch 8's cell state: 1.37e-4 apart where |c| ~ 100 (its logits: 1.4e-5)
    assert beyond_tolerance(state, state + np.array([1.37e-4, -1.2e-4, 0], dtype=np.float32)) <= PARITY_ATOL
    # the same difference on a value of 0.5 (a logit, a bounded h) is past the limit
    assert beyond_tolerance(state, state + np.array([0, 0, 1.37e-4], dtype=np.float32)) > PARITY_ATOL
    # and an export bug, say a gate's bias dropped, is far past it at any size
    assert beyond_tolerance(state, state * 1.01) > PARITY_ATOL


def test_parity_check_records_the_worst_difference_per_label_and_refuses_past_the_limit():
    parity = ParityCheck("logits", "state")
    state = np.array([100.0, 0.5], dtype=np.float32)
    parity.compare([state, state], [state + np.float32(1e-4), state], "state")
    parity.compare([np.zeros(2)], [np.full(2, 2e-5)], "logits")
    parity.verify()  # 1e-4 on a state of 100 is its rounding
    assert parity.worst == pytest.approx({"logits": 2e-5, "state": 1e-4}, rel=1e-2)
    parity.compare([np.zeros(2)], [np.full(2, 3e-4)], "logits")
    with pytest.raises(AssertionError, match="differs from torch"):
        parity.verify()
    with pytest.raises(ValueError):  # outputs left uncompared are a wiring fault in the check
        parity.compare([state, state], [state], "state")
