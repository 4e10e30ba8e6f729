"""Progress lines on stderr for steps that take a while (model building, export, engine builds)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Numbered steps with their elapsed time, so a user of a long export sees where it is."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.enabled = total, 0, enabled

    def note(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        self.done += 1
        self.note(f"[{self.done}/{self.total}] {message} ...")
        start = time.perf_counter()
        yield
        self.note(f"      done in {time.perf_counter() - start:.1f}s")
