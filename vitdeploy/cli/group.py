"""The `vitdeploy` group's behaviour: commands imported only when named, one-line errors, signals that unwind.

Commands live in their own modules and are imported by name when the command line asks for them (or for
`--help`'s list, which imports the light command modules only): `vitdeploy --help`, `list` and a usage
error never import torch, timm, ONNX or a runtime.
"""

from __future__ import annotations

import importlib
import signal
import threading
import warnings
from typing import Any

import click

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


class LazyGroup(click.Group):
    """A group whose commands are `module:attribute` strings, imported when the command is looked up.

    It also turns a VitdeployError anywhere below into `Error: <message>` and exit status 1, no traceback;
    shows vitdeploy's warnings as `Warning: <message>`; SIGINT and SIGTERM stop with one line and the
    shell's exit status (130, 143) after every staged write has been removed."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module, attribute = self.lazy_commands[cmd_name].split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

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
