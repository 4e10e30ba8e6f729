"""`vitdeploy bench-cli`: how long the CLI takes to answer, each command in a fresh interpreter (median of N)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import click

CASES = (  # what a user types first; the usage error is `export` without its RECIPE
    ("--help",), ("list",), ("doctor",), ("export",),
)


@click.command("bench-cli")
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True, help="Runs per command.")
def bench_cli(runs: int) -> None:
    """Time `vitdeploy --help`, `list`, `doctor` and a usage error from process start to exit, in this
    Python (`python -m vitdeploy.cli ...`, as the `vitdeploy` script runs it): median, min and max seconds, and
    the exit statuses seen (0, and 2 for the usage error)."""
    click.echo(f"{'command':<22} {'median s':>8} {'min s':>7} {'max s':>7} {'exit':>5}   ({runs} runs each, "
               f"{sys.executable})")
    for args in CASES:
        seconds, codes = [], set()
        for _ in range(runs):
            start = time.perf_counter()
            codes.add(subprocess.run([sys.executable, "-m", "vitdeploy.cli", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, check=False).returncode)
            seconds.append(time.perf_counter() - start)
        click.echo(f"{'vitdeploy ' + ' '.join(args):<22} {statistics.median(seconds):>8.2f} {min(seconds):>7.2f} "
                   f"{max(seconds):>7.2f} {','.join(map(str, sorted(codes))):>5}")
