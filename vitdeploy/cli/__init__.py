"""The `vitdeploy` command: a thin layer over the library; user mistakes print one line, exit 1."""

from __future__ import annotations

from typing import Any

import click

from vitdeploy import __version__
from vitdeploy.errors import VitdeployError


class _Group(click.Group):
    """Turns a VitdeployError anywhere below into `Error: <message>` and exit status 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VitdeployError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="vitdeploy")
def main() -> None:
    """Export timm ViT and Hiera backbones as ONNX / TensorRT artifacts with named, verified pyramids."""


def _register() -> None:
    from vitdeploy.cli.bench import bench
    from vitdeploy.cli.build import build
    from vitdeploy.cli.export import export
    from vitdeploy.cli.list_recipes import list_recipes
    from vitdeploy.cli.matrix import matrix
    from vitdeploy.cli.verify import verify

    for command in (list_recipes, export, build, verify, bench, matrix):
        main.add_command(command)


_register()
