"""The Ray cluster a command runs on: a local one started for it (on loopback), or an existing one.

A local cluster runs in Ray's single-machine mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), in which
every Ray process binds and dials 127.0.0.1 rather than the machine's network address; it has to be
set before Ray is imported. `--address` joins a running cluster (`ray start --head`, KubeRay) instead,
where the same code spreads replicas and actors over the nodes; vitdeploy and the artifact must then
be present on every node.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require

SINGLE_MACHINE = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, initialised for the block: `address` None starts a local cluster of `num_cpus` logical CPUs
    (shut down afterwards), else joins the cluster at `address` (`auto`, `HOST:PORT`, `ray://HOST:10001`).
    Ray replaces the driver's SIGTERM handler with `sys.exit`; the caller's handler is put back."""
    if address is None:
        os.environ.setdefault(*SINGLE_MACHINE)
    ray = require("ray")
    started = not ray.is_initialized()
    if started:
        main_thread = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main_thread else None
        try:
            ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise VitdeployError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, handler)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def local_cpus(minimum: int) -> int:
    """Logical CPUs of a local cluster: the machine's, and at least one per replica or actor asked for."""
    return max(os.cpu_count() or 1, minimum)
