"""Isolated bench: each runner in a process of its own, driven over a pipe by `vitdeploy bench`.

The bench process asks a worker to stage a batch, to time it (warmup + timed calls, as in-process)
and to send the last outputs back for the parity check. Between its turns a worker waits on the pipe
and takes no CPU, so each runner is timed with its own runtime's threads only, as a user's process
would run it.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from vitdeploy.errors import VitdeployError
from vitdeploy.runners.base import Outputs, Prepared
from vitdeploy.runners.candidates import RunnerSpec


def time_calls(run: Callable[[], Any], warmup: int, iterations: int) -> tuple[list[float], Any]:
    """Seconds of each timed call and the last result. The warmup runs right before the timed calls:
    interleaving runners call by call would time each one against the previous runtime's threads,
    which keep spinning for a while after a call (ONNX Runtime's pool, OpenMP)."""
    for _ in range(warmup):
        result = run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def _serve(connection: Connection, target: str, spec: RunnerSpec, threads: int) -> None:
    """The worker's loop: make and activate the runner, then answer prepare / time / fetch until stop."""
    from vitdeploy.artifact import load_artifact

    if spec.kind == "torch":
        import torch

        torch.set_num_threads(threads)
    try:
        runner = spec.create(load_artifact(Path(target)), threads)
        runner.activate()
    except VitdeployError as exc:
        connection.send(("error", str(exc)))
        return
    connection.send(("ok", (runner.name, runner.precision, runner.peak_key)))
    prepared: list[Prepared] = []
    last: list[Any] = []
    while True:
        command, *args = connection.recv()
        try:
            if command == "prepare":
                prepared.append(runner.prepare(args[0]))
                last.append(None)
                answer: Any = len(prepared) - 1
            elif command == "time":
                index, warmup, iterations = args
                answer, last[index] = time_calls(prepared[index].run, warmup, iterations)
            elif command == "fetch":
                answer = prepared[args[0]].fetch(last[args[0]])
            else:  # stop
                runner.deactivate()
                connection.send(("ok", None))
                return
        except VitdeployError as exc:
            connection.send(("error", str(exc)))
            continue
        connection.send(("ok", answer))


class Worker:
    """One runner in a spawned process (spawn: no state of the bench process, no forked runtime threads)."""

    def __init__(self, target: str, spec: RunnerSpec, threads: int):
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self.spec = spec
        self._process = context.Process(target=_serve, args=(child, target, spec, threads), daemon=True)
        self._process.start()
        child.close()
        self.name, self.precision, self.peak_key = self._answer()

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def _answer(self) -> Any:
        try:
            status, value = self._connection.recv()
        except EOFError:
            self._process.join(5)
            raise VitdeployError(f"the bench worker for {self.spec.name or self.spec.kind} exited (exit code "
                                 f"{self._process.exitcode}): see its error above") from None
        if status == "error":
            raise VitdeployError(value)
        return value

    def call(self, command: str, *args: Any) -> Any:
        self._connection.send((command, *args))
        return self._answer()

    def prepare(self, feed: dict[str, Any]) -> int:
        return self.call("prepare", feed)

    def time(self, index: int, warmup: int, iterations: int) -> list[float]:
        return self.call("time", index, warmup, iterations)

    def fetch(self, index: int) -> Outputs:
        return self.call("fetch", index)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self.call("stop")
            except (VitdeployError, OSError):
                pass
            self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()
