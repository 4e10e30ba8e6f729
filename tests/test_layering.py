"""The layering: the runtime side (load and run an artifact, serve, extract, Triton, doctor, list, the CLI)
imports nothing from the export side and never torch or timm at import time, so a runtime install without
them works (tests/test_runtime_install.py installs one) and the CLI answers at once."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import vitdeploy
from vitdeploy import families

# A trailing dot: the package's modules (vitdeploy.families itself only names them: recipes check names with it).
# The export side's, Ray (serve's, imported when serving starts) and onnx (a second to import: the runtime reads
# artifact directories without it; building an fp16/bf16 TensorRT engine converts the graph with it).
HEAVY = ("torch", "timm", "onnxscript", "onnx_ir", "safetensors", "ray", "onnx", "ml_dtypes")
EXPORT_SIDE = ("vitdeploy.export", "vitdeploy.models", "vitdeploy.families.", "vitdeploy.adapters", "vitdeploy.pyramid",
               "vitdeploy.checkpoints", "vitdeploy.sam2.encoder", "vitdeploy.sam2.checkpoint",
               "vitdeploy.sam2.reference", "vitdeploy.sam2.decoder", "vitdeploy.sam2.verify", "vitdeploy.verify", "vitdeploy.bench",
               "vitdeploy.tools.bench_report", "vitdeploy.tools.coverage", "vitdeploy.tools.gpu_proof", "vitdeploy.parity",
               "vitdeploy.runners.torch", "vitdeploy.engine.precision", "vitdeploy.engine.smoothing")
RUNTIME_PACKAGES = ("vitdeploy.engine", "vitdeploy.runners", "vitdeploy.serve", "vitdeploy.cli", "vitdeploy.sam2")
RUNTIME = ("vitdeploy", "vitdeploy.api", "vitdeploy.artifact", "vitdeploy.description", "vitdeploy.inputs",
           "vitdeploy.integrity", "vitdeploy.preprocess", "vitdeploy.calibration", "vitdeploy.atomic",
           "vitdeploy.progress", "vitdeploy.recipes", "vitdeploy.backends", "vitdeploy.tools.hardware", "vitdeploy.tools.doctor", "vitdeploy.optional",
           "vitdeploy.errors")

# Imports each module in turn in a fresh interpreter; names the first that brings in a heavy or export-side module.
PROBE = """
import importlib, json, sys
heavy, export_side = set(sys.argv[2].split(",")), tuple(sys.argv[3].split(","))
def offenders():
    return sorted(name for name in sys.modules if name.split(".")[0] in heavy
                  or any(name == side or name.startswith(side.rstrip(".") + ".") for side in export_side))
for module in sys.argv[1].split(","):
    importlib.import_module(module)
    if offenders():
        print(json.dumps({"module": module, "imported": offenders()[:8]}))
        break
else:
    if sys.argv[4:]:
        from vitdeploy.cli import main
        main(sys.argv[4:], standalone_mode=False)
    print(json.dumps({"module": None, "imported": offenders()[:8]}))
"""


def runtime_modules() -> list[str]:
    found = list(RUNTIME)
    for package in RUNTIME_PACKAGES:
        path = __import__(package, fromlist=["_"]).__path__
        found += [package] + [f"{package}.{info.name}" for info in pkgutil.iter_modules(path)
                              if info.name != "__main__"]
    return [name for name in found if name not in EXPORT_SIDE]


def probe(modules: list[str], *cli: str) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE, ",".join(modules), ",".join(HEAVY), ",".join(EXPORT_SIDE),
                          *cli], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_runtime_modules_import_nothing_from_the_export_side():
    modules = runtime_modules()
    assert {"vitdeploy.api", "vitdeploy.serve.app", "vitdeploy.serve.extract", "vitdeploy.serve.client",
            "vitdeploy.serve.triton", "vitdeploy.runners.openvino", "vitdeploy.cli.serve"} <= set(modules)
    assert probe(modules) == {"module": None, "imported": []}


def test_the_cli_lists_its_commands_and_recipes_without_the_export_side():
    for args in (["--help"], ["list"]):
        assert probe(["vitdeploy.cli"], *args) == {"module": None, "imported": []}, args


def test_vitdeploy_load_is_there_without_importing_the_runtimes_first():
    assert {"Model", "Pyramid", "load"} <= set(vitdeploy.__all__) and callable(vitdeploy.load)


def test_every_family_module_registers_the_family_it_is_named_after():
    """families.names() reads MODULES (no torch); the registry, importing them, must agree."""
    assert sorted(families.registry()) == families.names()
