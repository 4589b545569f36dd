"""Where the recurrent state of the active generation streams lives between steps.

The state (h, c) of every active row stays an ONNX Runtime value on the session's device,
fed back through IOBinding: on a GPU it never crosses to the host between steps; per step
only the sampled ids go in and the logits (needed on the host for sampling) come out. Rows
joining or leaving, once per request, move the state through the host. On the CPU the same
code runs with the values in host memory, so one path serves and is tested everywhere.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from seqserve.generation import GenerationState, reads_clock


class StepState:
    """The device-resident implementation of `seqserve.generation.Steps`."""

    def __init__(self, step_session: ort.InferenceSession, device: str = "cpu", device_id: int = 0):
        self.session = step_session
        self.reads_clock = reads_clock(step_session)
        self.device, self.device_id = device, device_id
        self.logits: np.ndarray | None = None  # [rows, V], host
        self._h: ort.OrtValue | None = None
        self._c: ort.OrtValue | None = None
        self._host_copy: tuple[np.ndarray, np.ndarray] | None = None  # h, c as last loaded from the host
        self._binding = None  # of the last step, whose outputs h_next/c_next are the state

    def __len__(self) -> int:
        return 0 if self.logits is None else len(self.logits)

    def _load(self, h: np.ndarray, c: np.ndarray) -> None:
        h, c = np.ascontiguousarray(h), np.ascontiguousarray(c)
        self._h = ort.OrtValue.ortvalue_from_numpy(h, self.device, self.device_id)
        self._c = ort.OrtValue.ortvalue_from_numpy(c, self.device, self.device_id)
        self._host_copy = (h, c)

    def host(self) -> GenerationState:
        """The state on the host (a device-to-host copy after a step on a GPU)."""
        if self._host_copy is None:
            if self.device == "cpu":
                self._host_copy = (self._h.numpy(), self._c.numpy())
            else:
                _, h, c = self._binding.copy_outputs_to_cpu()
                self._host_copy = (h, c)
        return GenerationState(self.logits, *self._host_copy)

    def append(self, state: GenerationState) -> None:
        """New rows (prompts just read) join after the existing ones."""
        if not len(self):
            self.logits = state.logits
            self._load(state.h, state.c)
            return
        current = self.host()
        self.logits = np.concatenate([current.logits, state.logits])
        self._load(np.concatenate([current.h, state.h], axis=1), np.concatenate([current.c, state.c], axis=1))

    def keep(self, rows: np.ndarray) -> None:
        """Only these rows stay (in this order)."""
        if len(rows) == 0:
            self.logits, self._h, self._c, self._host_copy, self._binding = None, None, None, None, None
            return
        current = self.host()
        self.logits = current.logits[rows]
        self._load(current.h[:, rows], current.c[:, rows])

    def step(self, ids: np.ndarray, clock: np.ndarray | None = None) -> None:
        """Feed one id per row ([rows, 1] int64), and its bar clock for a graph that reads
        one; the state advances in place on the device."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("token", ids)
        if self.reads_clock:
            binding.bind_cpu_input("clock", clock)
        binding.bind_ortvalue_input("h", self._h)
        binding.bind_ortvalue_input("c", self._c)
        binding.bind_output("logits", "cpu")
        binding.bind_output("h_next", self.device, self.device_id)
        binding.bind_output("c_next", self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        logits, self._h, self._c = binding.get_outputs()
        self.logits = logits.numpy()
        self._binding, self._host_copy = binding, None
