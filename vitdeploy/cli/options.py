"""Click parameter types shared by the commands."""

from __future__ import annotations

from typing import Any

import click

from vitdeploy.runners import ALIASES, AUTO

BACKENDS = (*ALIASES, *AUTO)  # what `vitdeploy.load(backend=...)` takes


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
