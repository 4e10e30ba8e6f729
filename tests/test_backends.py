"""One `--backend` vocabulary (vitdeploy.backends): every command takes a subset of it, every name is taken
somewhere, and a renamed spelling still works with a one-line warning."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from vitdeploy import engine, runners
from vitdeploy.backends import BACKENDS, RENAMED
from vitdeploy.cli import main
from vitdeploy.serve import triton

# the commands that take --backend, and the library subset each one's choices come from
TAKERS = {"build": engine.BUILD_CHOICES, "export": engine.BUILD_CHOICES, "serve": runners.BACKENDS,
          "serve-bench": runners.BACKENDS, "extract": runners.BACKENDS, "bench-sam2": runners.BACKENDS,
          "triton": triton.BACKENDS}


def backend_choices() -> dict[str, tuple[str, ...]]:
    """Command name -> its --backend choices, read from the CLI as a user's --help shows them."""
    context = click.Context(main)
    found = {}
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        assert command is not None
        for param in command.params:
            if "--backend" in param.opts:
                assert isinstance(param.type, click.Choice), name
                found[name] = tuple(param.type.choices)
    return found


def test_every_command_takes_a_subset_of_the_one_vocabulary_and_every_name_is_taken():
    found = backend_choices()
    assert found == TAKERS
    for command, choices in found.items():
        assert set(choices) <= set(BACKENDS), command
    assert set().union(*found.values()) == set(BACKENDS)
    assert not set(RENAMED) & set(BACKENDS) and set(RENAMED.values()) <= set(BACKENDS)
    assert {"onnxruntime", "tensorrt_rtx"} <= set(engine.BUILD_CHOICES) & set(runners.BACKENDS)  # build and run


def test_a_renamed_spelling_is_one_warning_line(tmp_path: Path):
    """The old spelling is converted (then the next option's mistake stops the command before it runs)."""
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--backend", "onnxruntime-cpu", "--port", "0"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "Warning: backend 'onnxruntime-cpu' is deprecated: use 'onnxruntime_cpu'"
    assert "Invalid value for '--port'" in result.stderr
