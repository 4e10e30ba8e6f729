"""Build progress from TensorRT's own IProgressMonitor, as lines with elapsed time on stderr.

A full TensorRT build of a large ViT times tactics for minutes; without this the command looks hung.
Only the outer phases are printed, and long phases report their step count at most every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

MAX_DEPTH = 2  # "Building engine" > "Building engine from subgraph" > "Computing profile costs"
STEP_EVERY_S = 5.0


def make_progress_monitor(trt: ModuleType, note: Callable[[str], None]):
    """An instance of a `trt.IProgressMonitor` subclass (of the active flavour) that calls `note`."""

    base: Any = trt.IProgressMonitor  # the active flavour's class, known only at run time

    class Monitor(base):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()
            self.lock = threading.Lock()  # TensorRT may report from several threads
            self.depth: dict[str, int] = {}
            self.steps: dict[str, int] = {}
            self.last_step_note = self.start

        def _note(self, depth: int, message: str) -> None:
            note(f"      {time.perf_counter() - self.start:7.1f}s {'  ' * depth}{message}")

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self.lock:
                depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self.depth[phase_name], self.steps[phase_name] = depth, num_steps
                if depth <= MAX_DEPTH:
                    self._note(depth, f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self.lock:
                now = time.perf_counter()
                if self.depth.get(phase_name, 0) <= MAX_DEPTH + 1 and now - self.last_step_note >= STEP_EVERY_S:
                    self.last_step_note = now
                    self._note(self.depth.get(phase_name, 0), f"{phase_name}: {step + 1}/{self.steps.get(phase_name)}")
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self.lock:
                depth = self.depth.pop(phase_name, 0)
                if depth == 0:
                    self._note(depth, f"{phase_name} finished")

    return Monitor()
