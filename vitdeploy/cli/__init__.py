"""The `vitdeploy` command: a thin layer over the library; user mistakes print one line, exit 1."""

from __future__ import annotations

import signal
import threading
import warnings
from typing import Any

import click

from vitdeploy import __version__
from vitdeploy.errors import VitdeployError, VitdeployWarning


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """`warnings.showwarning` (whose `file` formatwarning does not take): vitdeploy's as one line, others as usual."""
    click.echo(f"Warning: {message}" if issubclass(category, VitdeployWarning) else
               warnings.formatwarning(message, category, filename, lineno, line).rstrip(), err=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (containers, CI time-outs, systemd) unwinds like Ctrl-C, so every staged write is removed."""


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


class _Group(click.Group):
    """Turns a VitdeployError anywhere below into `Error: <message>` and exit status 1, no traceback;
    shows vitdeploy's warnings as `Warning: <message>`; SIGINT and SIGTERM stop with one line and the
    shell's exit status (130, 143) after every staged write has been removed."""

    def invoke(self, ctx: click.Context) -> Any:
        main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None, warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except VitdeployError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:
            signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
            click.echo(f"Error: stopped by {signum.name}: nothing half-written was left behind", err=True)
            ctx.exit(128 + signum)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous[0])
            warnings.showwarning = previous[1]


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="vitdeploy")
def main() -> None:
    """Export timm vision backbones as ONNX, TensorRT and OpenVINO artifacts with named, verified pyramids."""


from vitdeploy.cli.bench import bench  # noqa: E402  (the commands, registered on `main` below)
from vitdeploy.cli.build import build  # noqa: E402
from vitdeploy.cli.doctor import doctor  # noqa: E402
from vitdeploy.cli.export import export  # noqa: E402
from vitdeploy.cli.extract import extract  # noqa: E402
from vitdeploy.cli.gpu_proof import gpu_proof  # noqa: E402
from vitdeploy.cli.list_recipes import list_recipes  # noqa: E402
from vitdeploy.cli.matrix import matrix  # noqa: E402
from vitdeploy.cli.quantize import quantize  # noqa: E402
from vitdeploy.cli.serve import serve, serve_bench  # noqa: E402
from vitdeploy.cli.triton import triton  # noqa: E402
from vitdeploy.cli.verify import verify  # noqa: E402

for _command in (list_recipes, export, build, quantize, verify, bench, matrix, doctor, gpu_proof, serve, serve_bench,
                 extract, triton):
    main.add_command(_command)
