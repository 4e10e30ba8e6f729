"""How busy other processes keep this machine's CPUs: a CPU timing taken beside them measures them too.

Read from Linux's /proc: the CPU time the whole machine spent busy (user, system, interrupts, and a
VM's steal time) minus what bench's own processes spent, over wall time. The result is in CPUs: 0.5
means other processes kept half a core busy on average. None where /proc is not there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

STAT = Path("/proc/stat")
DEFAULT_MAX_LOAD = 0.2  # CPUs other processes may keep busy on average before a bench run counts as loaded
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (not idle, iowait; guest is within user)


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    values = [int(v) for v in STAT.read_text().splitlines()[0].split()[1:9]]
    return sum(values[i] for i in BUSY_FIELDS), sum(values)


def _process_jiffies(pids: Sequence[int]) -> int:
    """utime + stime of each process (all its threads); a process that has exited counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm
    return total


class LoadMeter:
    """CPUs kept busy by processes other than `pids` between `start()` and `stop()`."""

    def __init__(self, pids: Sequence[int] = ()):
        self.available = STAT.is_file()
        self.pids = [os.getpid(), *pids]
        self.cpus = os.cpu_count() or 1
        self._start: tuple[int, int, int] | None = None

    def start(self) -> None:
        if self.available:
            self._start = (*_machine_jiffies(), _process_jiffies(self.pids))

    def stop(self) -> float | None:
        if self._start is None:
            return None
        busy, total = _machine_jiffies()
        own = _process_jiffies(self.pids)
        start_busy, start_total, start_own = self._start
        self._start = None
        elapsed = (total - start_total) / self.cpus  # ticks of wall time
        if elapsed <= 0:
            return 0.0
        return round(max(0.0, (busy - start_busy) - (own - start_own)) / elapsed, 3)

    def sample(self, seconds: float) -> float | None:
        """Other processes' load over the next `seconds` (bench's own processes idle meanwhile)."""
        self.start()
        time.sleep(seconds)
        return self.stop()


def load_average() -> float | None:
    """The 1-minute load average (runnable and waiting threads, bench's own included)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
