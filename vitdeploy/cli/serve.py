"""`vitdeploy serve ARTIFACT`: the artifact behind an HTTP API on Ray Serve (vitdeploy.serve.app); `serve-bench`."""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from pathlib import Path

import click

from vitdeploy.cli.group import Terminated
from vitdeploy.cli.options import IntList, Size, backend_option, precision_option, threads_option
from vitdeploy.errors import VitdeployError

STOP_MARGIN_S = 15  # after the application's drain: deleting it, then the local cluster


@click.command()
@click.argument("artifact", type=click.Path(exists=True, path_type=Path))
@click.option("--replicas", type=click.IntRange(1), default=1, show_default=True, help="Replicas, one CPU each.")
@click.option("--max-batch", type=click.IntRange(1),
              help="Images per runtime call [default: 8, or the artifact's batch max if smaller].")
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=10.0, show_default=True,
              help="How long a replica waits for more requests after the first of a batch.")
@backend_option(help="The runtime every replica loads (as vitdeploy.load).")
@precision_option()
@threads_option(help="Runtime threads per replica [default: the CPUs / replicas].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--max-body-mb", type=click.FloatRange(0, min_open=True), default=32.0, show_default=True,
              help="Larger requests are refused (413).")
@click.option("--body-timeout-s", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="A request body that pauses longer is refused (408).")
@click.option("--token", envvar="VITDEPLOY_TOKEN", show_envvar=True,  # vitdeploy.serve.client.TOKEN_ENV
              help="Require 'Authorization: Bearer TOKEN' on every request (401 without) [default: none].")
@click.option("--address", help="Join the Ray cluster at this address (auto, HOST:PORT, ray://HOST:10001) "
                                "[default: start a local one on loopback].")
def serve(artifact: Path, replicas: int, max_batch: int | None, batch_wait_ms: float, backend: str,
          precision: str | None, threads: int | None, host: str, port: int, max_body_mb: float,
          body_timeout_s: float, token: str | None, address: str | None) -> None:
    """Serve ARTIFACT over HTTP on Ray Serve until SIGINT or SIGTERM (docs/serving.md)."""
    from vitdeploy.artifact import load_artifact
    from vitdeploy.runners import select
    from vitdeploy.serve import app
    from vitdeploy.serve.batching import serving_batch
    from vitdeploy.serve.cluster import local_cpus, ray_cluster

    if token is not None and not token.strip():
        raise VitdeployError(f"--token is empty: expected a secret of one character or more (or unset "
                             f"{app.TOKEN_ENV})")
    if not _loopback(host) and token is None:
        click.echo(f"Warning: --host {host} exposes the HTTP API beyond this machine without authentication: anyone "
                   f"who reaches port {port} can use it; set --token or {app.TOKEN_ENV} to require a bearer token "
                   "(docs/security.md)", err=True)
    loaded = load_artifact(artifact)
    runtime, _ = select(loaded, backend, precision)  # an unavailable backend fails here, not in every replica
    max_batch = serving_batch(loaded.input.batch, max_batch, "--max-batch")
    if address is None:
        app.check_port(host, port)
    cpus = local_cpus(replicas)
    options = app.ServeOptions(artifact=str(artifact.resolve()), backend=backend, precision=precision,
                               replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                               threads=threads or max(1, cpus // replicas), max_body_bytes=int(max_body_mb * 2**20),
                               body_timeout_s=body_timeout_s, token=token and token.strip())
    with ray_cluster(address, cpus) as ray:
        app.start(host, port)
        app.deploy(options)
        click.echo(f"serving {loaded.name} ({runtime.name}, {replicas} replica{'s' * (replicas > 1)}, batches of up "
                   f"to {max_batch} within {batch_wait_ms:g} ms) at http://{host}:{port}/v1/infer; metadata "
                   f"/v1/metadata, health /v1/health; Ray cluster {ray.get_runtime_context().gcs_address}; "
                   "Ctrl-C stops")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt as exc:
            click.echo(f"stopped by {'SIGTERM' if isinstance(exc, Terminated) else 'SIGINT'}: shutting down", err=True)
            timeout_s = app.DRAIN_TIMEOUT_S + STOP_MARGIN_S
            watchdog = threading.Timer(timeout_s, _give_up, (timeout_s,))
            watchdog.daemon = True
            watchdog.start()
            app.stop()
    click.echo("stopped: Ray Serve is shut down", err=True)


def _loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (a loopback address or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


def _give_up(timeout_s: float) -> None:
    """A SIGTERM sent to the whole process group (systemd's default, `timeout`) also stops Ray's own processes,
    and Ray would then wait a minute for them: say so and exit."""
    click.echo(f"Error: Ray did not shut down within {timeout_s:g} s (were its processes stopped by the same "
               "signal?): exiting", err=True)
    os._exit(1)


@click.command("serve-bench")
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--replicas", "replica_counts", type=IntList(), default="1,2", show_default=True,
              help="Replica counts to serve side by side (one application each).")
@click.option("--concurrency", type=click.IntRange(1), default=16, show_default=True, help="Client threads.")
@click.option("--requests", type=click.IntRange(1), default=128, show_default=True, help="Images per mode and round.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--size", type=Size(), help="HxW of the image [default: the artifact's export size].")
@click.option("--max-batch", type=click.IntRange(1), help="[default: 8, or the artifact's batch max if smaller].")
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=5.0, show_default=True)
@backend_option()
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve_bench(artifact: Path, replica_counts: tuple[int, ...], concurrency: int, requests: int, rounds: int,
                size: tuple[int, int] | None, max_batch: int | None, batch_wait_ms: float, backend: str,
                port: int) -> None:
    """Time ARTIFACT served on Ray Serve (a local cluster) at each replica count against direct runtime calls."""
    from vitdeploy.serve.bench import ServeBenchOptions, format_serve_table, run_serve_bench

    options = ServeBenchOptions(replicas=replica_counts, concurrency=concurrency, requests=requests, rounds=rounds,
                                size=size, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                                backend=backend, port=port)
    click.echo(format_serve_table(run_serve_bench(artifact, options)))
