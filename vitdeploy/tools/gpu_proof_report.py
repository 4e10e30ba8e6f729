"""The GPU proof's record (gpu_proof.json) as markdown: what docs/verification.md links to.

Every runner the proof tries gets a row per batch size, measured or not: a runner that did not run says
why (a footnote under its table), so a missing number is never silent.
"""

from __future__ import annotations

from typing import Any

from vitdeploy.tools.doctor import Environment

# (bench backend name, precision, the proof's bench group that times it), in table order
RUNNERS = (("torch", "fp32", "baselines"), ("torch-autocast", "bf16", "baselines"),
           ("torch-autocast", "fp16", "baselines"), ("torch-compile", "fp32", "compile"),
           ("onnxruntime", "fp32", "baselines"), ("tensorrt_rtx", "fp32", "baselines"), ("aoti", "fp32", "aoti"))
STEP_OF_GROUP = {"baselines": "baselines", "compile": "torch.compile", "aoti": "aoti"}
HEADER = ("| runner | precision | batch | median ms | p90 ms | img/s | speedup vs eager fp32 (rounds) "
          "| max abs vs eager | parity | TFLOP/s | % of peak |")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _step(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((step for step in data["steps"] if step["step"] == name), None)


def _why_not(data: dict[str, Any], recipe: str, backend: str, precision: str, batch: int) -> str:
    """Why a runner has no row at this batch: its bench step's outcome, or what that bench said about it."""
    group = next(g for b, p, g in RUNNERS if (b, p) == (backend, precision))
    bench = data["bench"].get(recipe, {}).get(group)
    if bench is None:
        step = _step(data, f"{STEP_OF_GROUP[group]} {recipe}")
        return f"{step['status']}: {step['detail']}" if step else "not reached (the run stopped before this step)"
    shape = f"{backend} {precision} batch {batch} "
    for key, reason in bench["skipped"].items():  # keyed by runtime, engine file, or runner and shape
        if key in (backend, f"model.{backend}.{precision}.engine") or key.startswith(shape):
            return reason
    step = _step(data, f"tensorrt_rtx {recipe}") if backend == "tensorrt_rtx" else None
    return step["detail"] if step else "not measured"


def _table(data: dict[str, Any], recipe: str) -> list[str]:
    rows, notes = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"], dict[str, str]()
    benches = data["bench"].get(recipe, {})
    measured = {(r["backend"], r["precision"], r["batch"]): r  # eager fp32 from the baselines, not a later run
                for group in ("aoti", "compile", "baselines") for r in benches.get(group, {}).get("rows", [])}
    for batch in data["batch_sizes"]:
        for backend, precision, _ in RUNNERS:
            row = measured.get((backend, precision, batch))
            if row is None:
                reason = _why_not(data, recipe, backend, precision, batch)
                mark = notes.setdefault(reason, f"({chr(ord('a') + len(notes))})")
                rows.append(f"| {backend} | {precision} | {batch} | not measured {mark} |" + " |" * 7)
                continue
            parity = {True: "ok", False: "FAIL", None: "-"}[row["parity"]]
            peak = "-" if row["peak_fraction"] is None else f"{row['peak_fraction'] * 100:.1f}"
            low, high = row["speedup_range"]
            rows.append(f"| {backend} | {precision} | {batch} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | "
                        f"{row['images_per_s']:.1f} | {row['speedup']:.2f}x ({low:.2f}-{high:.2f}) | "
                        f"{row['max_abs']:.2e} | {parity} | {row['tflops']:.2f} | {peak} |")
    return rows + [""] + [f"{mark} {_cell(reason)}  " for reason, mark in notes.items()]


def _bench_section(data: dict[str, Any], recipe: str) -> list[str]:
    bench = data["bench"].get(recipe, {})
    first = bench.get("baselines") or bench.get("compile")
    if first is None:  # nothing timed: the table still says why, runner by runner
        return [f"### {recipe}", "", *_table(data, recipe), ""]
    flops = ", ".join(f"{size}: {gflops:.3g} GFLOP/image" for size, gflops in first["gflops_per_image"].items())
    options = first["options"]
    lines = [f"### {recipe} ({first['model']}), {flops}", "",
             f"{options['rounds']} rounds of {options['warmup']} warmup + {options['iterations']} timed calls per "
             "runner; speedup is the median of the per-round ratios to eager fp32 of the same run (torch.compile "
             "is timed in a run of its own, with its own eager reference).", ""]
    lines += _table(data, recipe)
    peak = first["peak"]
    if peak:
        peaks = ", ".join(f"{key} {value:g}" for key, value in peak["tflops"].items())
        lines += ["", f"Peak TFLOP/s of {peak['entry']} ({peak['source']}): {peaks}.", ""]
    else:
        lines += ["", "% of peak: only on a GPU in vitdeploy's peak table (vitdeploy/hardware.py).", ""]
    return lines


def _rtx_section(data: dict[str, Any]) -> list[str]:
    names = {"auto": "`vitdeploy build --backend auto`", "support_matrix": "this GPU on TensorRT-RTX's support matrix",
             "build_target_gpu": "build with `--target-gpu`", "build_portable": "build, portable",
             "load": "load (vitdeploy's checks)",
             "tensorrt_rtx_itself": "TensorRT-RTX itself, vitdeploy's checks bypassed"}
    lines = ["## TensorRT-RTX", ""]
    for recipe, attempt in data["tensorrt_rtx"].items():
        lines += [f"{recipe}:", ""]
        lines += [f"- {names[key]}: {'ok' if result['ok'] else 'no'}: {_cell(result['text'])}"
                  for key, result in attempt.items()]
        lines.append("")
    return lines if data["tensorrt_rtx"] else lines + ["Not tried: see Steps.", ""]


def _pytest_section(data: dict[str, Any]) -> list[str]:
    record, lines = data["pytest"], ["## pytest -m gpu", ""]
    if record is None:
        step = _step(data, "pytest -m gpu")
        return lines + [f"Not run: {step['detail'] if step else 'the run stopped before it'}.", ""]
    lines.append(f"`{record['command']}` (capped at {record['cap_s']} s): **{_cell(record.get('summary', ''))}** "
                 f"(exit {record['returncode']})")
    reasons = [line for line in record.get("tail", []) if line.startswith(("SKIPPED", "FAILED", "ERROR"))]
    return lines + (["", "```", *reasons, "```"] if reasons else []) + [""]


def render_markdown(data: dict[str, Any]) -> str:
    """gpu_proof.md from gpu_proof.json's record."""
    m = data["machine"]
    where = f"{m['gpu']} (compute capability {m['compute_capability']})" if m["gpu"] else \
        f"no GPU: a dry run on the CPU (--device {data['device']})"
    state = "finished" if data["finished"] else "stopped before the end (partial record)"
    lines = [f"# GPU proof: {where}, {data['date_utc'][:10]}", "",
             f"`{data['command']}`: {state}, {data['elapsed_s']:.0f} s of a {data['budget_s']:.0f} s budget.", "",
             "## Machine", "", "| | |", "|---|---|",
             f"| GPU | {m['gpu'] or 'none'}, compute capability {m['compute_capability'] or '-'} |",
             f"| driver | {m['driver'] or '-'} (CUDA {m['cuda_driver'] or '-'}) |",
             f"| torch | {m['torch']} (CUDA {m['torch_cuda'] or 'none'}), timm {m['timm']}, onnx {m['onnx']} |",
             f"| python | {m['python']}, {m['cpu_count']} CPUs |", "",
             "## Runtimes (`vitdeploy doctor`)", "", "```", *Environment.from_dict(data["environment"]).lines(), "```",
             "", "## Benchmarks", ""]
    for step in data["steps"]:
        if step["step"].startswith("export "):
            lines += _bench_section(data, step["step"].split(" ", 1)[1])
    lines += _rtx_section(data) + _pytest_section(data)
    lines += ["## Steps", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {_cell(s['detail'])} |" for s in data["steps"]]
    return "\n".join(lines) + "\n"
