"""The options and parameter types the commands share, each declared once.

Light by design: the choices that live in library modules (runtimes, builders) are `LazyChoice`s, read
when a command parses or shows its own help, so listing the commands imports none of them.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from vitdeploy.description import PRECISIONS

F = TypeVar("F", bound=Callable[..., Any])

# --backend: the subsets of the one vocabulary (vitdeploy.backends) that the commands take
RUNTIMES = "vitdeploy.runners:BACKENDS"  # what `vitdeploy.load(backend=...)` runs on
BUILDERS = "vitdeploy.engine:BUILD_CHOICES"  # what `vitdeploy build --backend` builds
TRITON = "vitdeploy.serve.triton:BACKENDS"  # the runtimes Triton has a backend for
INT8 = "vitdeploy.engine.onnxruntime"  # the int8 builder, whose calibration options `calibration_options` declares


class LazyChoice(click.Choice):
    """A Choice whose values are a library constant (`module:NAME`), imported when first needed."""

    def __init__(self, source: str):
        super().__init__(())
        self.source = source

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        module, name = self.source.split(":")
        values: Sequence[str] = getattr(importlib.import_module(module), name)
        return values

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        """Choice.__init__ sets them; the source gives them."""


class BackendChoice(LazyChoice):
    """A subset of the `--backend` vocabulary; a renamed spelling is taken with a warning (backends.canonical)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from vitdeploy.backends import canonical

        return super().convert(canonical(value), param, ctx)


def backend_option(source: str = RUNTIMES, default: str | tuple[str, ...] = "auto", help: str | None = None,
                   multiple: bool = False) -> Callable[[F], F]:
    """`--backend`: a runtime name (`RUNTIMES`, the default) or the subset a command takes (builders, Triton's)."""
    return click.option("--backend", "backends" if multiple else "backend", type=BackendChoice(source),
                        default=default, show_default=True, multiple=multiple, help=help)


def calibration_options(function: F) -> F:
    """The int8 builder's options (vitdeploy.engine.onnxruntime.build_int8), shared by `build` and `quantize`."""
    options = [
        click.option("--calibration", type=click.Path(file_okay=False, path_type=Path),
                     help="int8: folder of PNG/JPEG photos; the first --samples calibrate, the next --held-out judge "
                          "the result."),
        click.option("--samples", type=int, default=32, show_default=True,
                     help="int8: photos to calibrate on."),
        click.option("--held-out", type=int, default=4, show_default=True,
                     help="int8: photos, after the calibration ones, to check every level against eager fp32."),
        click.option("--method", type=LazyChoice(f"{INT8}:METHODS"), default="minmax", show_default=True,
                     help="int8: calibration method."),
        click.option("--activations", type=LazyChoice(f"{INT8}:ACTIVATIONS"), default="s8", show_default=True,
                     help="int8: s8 symmetric, runs in ONNX Runtime, OpenVINO and TensorRT; u8: faster in ONNX "
                          "Runtime only."),
        click.option("--exclude", multiple=True, metavar="OP_OR_NODE",
                     help="int8: keep float every node of this op type, or whose name matches this glob (repeat)."),
        click.option("--dynamic", is_flag=True,
                     help="int8: dynamic (no calibration; ONNX Runtime only); --calibration then only supplies "
                          "held-out photos."),
        click.option("--smooth", default="auto", show_default=True, metavar="auto|off|ALPHA",
                     help="int8: SmoothQuant, migrating activation outlier channels into the weights. auto: where "
                          "calibration finds outlier channels (alpha 0.5); ALPHA (0..1): on every quantised MatMul's "
                          "input; off."),
    ]
    for option in reversed(options):
        function = option(function)
    return function



def precision_option(default: str | None = None, help: str = "The engine precision [default: fp32, else fp16; "
                                                             "bf16 and int8 only when asked for].",
                     choices: Sequence[str] = PRECISIONS, multiple: bool = False) -> Callable[[F], F]:
    """`--precision`: one of the artifact format's precisions, or the subset a command takes (`choices`);
    `multiple`: repeatable, passed as `precisions`."""
    return click.option("--precision", "precisions" if multiple else "precision", type=click.Choice(choices),
                        default=() if multiple else default, show_default=default is not None, multiple=multiple,
                        help=help)


def threads_option(help: str) -> Callable[[F], F]:
    return click.option("--threads", type=click.IntRange(1), help=help)


def seed_option(help: str = "Seed of the random inputs.") -> Callable[[F], F]:
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def batch_sizes_option(default: str | None = None, help: str | None = None) -> Callable[[F], F]:
    return click.option("--batch-sizes", type=IntList(), default=default, show_default=default is not None, help=help)


class IntList(click.ParamType):
    """`0,1,2,3` -> (0, 1, 2, 3); `length` fixes how many."""

    name = "ints"

    def __init__(self, length: int | None = None):
        self.length = length

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)
        if self.length is not None and len(numbers) != self.length:
            self.fail(f"expected {self.length} comma-separated integers, got {value!r}", param, ctx)
        return numbers


def _parse_size(part: str) -> tuple[int, int]:
    height, width = part.lower().split("x")
    return int(height), int(width)


class SizeList(click.ParamType):
    """`224x224,256x320` -> ((224, 224), (256, 320))."""

    name = "sizes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(_parse_size(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated HxW sizes such as 224x224,256x320, got {value!r}", param, ctx)


class Size(click.ParamType):
    """`256x320` -> (256, 320)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return _parse_size(str(value))
        except ValueError:
            self.fail(f"expected one HxW size such as 256x320, got {value!r}", param, ctx)


class KeyValue(click.ParamType):
    """`depth=4` -> ("depth", 4): the value read as TOML (numbers, booleans, [lists], "strings"), else as a string."""

    name = "key=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE such as depth=4, got {value!r}", param, ctx)
        try:
            return key.strip(), tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return key.strip(), text
