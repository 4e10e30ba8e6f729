"""SAM2's prompt encoder + mask decoder as the artifact's second graph (export --decoder), and
vitdeploy.sam2.Predictor end to end against Meta's own SAM2ImagePredictor on real photos.

The artifacts are conftest.sam2_decoder_artifacts: SAM2.1 tiny with its trunk cut as tests/recipes/
sam2_dynamic.toml cuts it (5 blocks, 48 channels) and SAM2.1's full prompt encoder and mask decoder, built
by Meta's build_sam2 with seeded random weights, at 512 and at 1024 (SAM2's own size) from two checkpoints of
different seeds. Everything here needs the `sam2` package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import skimage.data
import timm
import torch
from click.testing import CliRunner

from conftest import RECIPES, requires
from vitdeploy.artifact import load_artifact
from vitdeploy.cli import main
from vitdeploy.errors import VitdeployError

pytestmark = requires("sam2")
RECIPE = str(RECIPES / "sam2_dynamic.toml")
SIZES = (512, 1024)


def prompts(height: int, width: int) -> dict[str, dict]:
    """SAM2's prompt kinds, in original-image pixels: 1 point, points with a negative, a box, a box with a point."""
    return {"1 point": {"point_coords": [[width * 0.5, height * 0.4]], "point_labels": [1]},
            "3 points": {"point_coords": [[width * 0.3, height * 0.3], [width * 0.6, height * 0.5],
                                          [width * 0.2, height * 0.8]], "point_labels": [1, 0, 1]},
            "box": {"box": [width * 0.2, height * 0.25, width * 0.7, height * 0.9]},
            "box+point": {"box": [width * 0.2, height * 0.25, width * 0.7, height * 0.9],
                          "point_coords": [[width * 0.4, height * 0.5]], "point_labels": [0]}}


@pytest.fixture(scope="module")
def artifacts(sam2_decoder_artifacts: dict[int, Path]) -> dict[int, Path]:
    return sam2_decoder_artifacts


def meta_image_predictor(artifact: Path):
    """Meta's SAM2ImagePredictor built as the artifact was exported (its trunk, its size, its checkpoint)."""
    from vitdeploy.sam2.graph import read_decoder
    from vitdeploy.sam2.reference import meta_predictor, meta_sam2

    description = load_artifact(artifact).description
    decoder = read_decoder(artifact, description)
    with torch.device("meta"):
        trunk = timm.create_model(description.timm_name, **description.timm_kwargs)
    return meta_predictor(meta_sam2(trunk, decoder.checkpoint, decoder.image_size))


def test_decoder_graph_is_described(artifacts: dict[int, Path]):
    """decoder.json: sizes, IO, the checkpoint keys used, the encoder's weights sha256; the ONNX graph takes any
    number of points."""
    for size, artifact in artifacts.items():
        description = json.loads((artifact / "vitdeploy.json").read_text())
        decoder = json.loads((artifact / "decoder.json").read_text())
        assert (decoder["format"], decoder["image_size"], decoder["embedding_hw"], decoder["mask_hw"]) == (
            "vitdeploy.sam2_decoder", size, [size // 16] * 2, [size // 4] * 2)
        assert decoder["encoder_weights_sha256"] == description["weights"]["sha256"]
        assert decoder["used_prefixes"] == {"sam_prompt_encoder.": 17, "sam_mask_decoder.": 131, "no_mem_embed": 1}
        assert {k: v["shape"] for k, v in decoder["inputs"].items()} == {
            "stride4": [1, 256, size // 4, size // 4], "stride8": [1, 256, size // 8, size // 8],
            "stride16": [1, 256, size // 16, size // 16], "point_coords": [1, "points", 2],
            "point_labels": [1, "points"], "mask_input": [1, 1, size // 4, size // 4], "has_mask_input": [1]}
        assert decoder["multimask"]["dynamic_multimask_via_stability"] is True
        assert "sam_mask_decoder." in description["weights"]["ignored_prefixes"]  # the encoder graph leaves it out
    graph = onnx.load(str(artifacts[512] / "decoder.onnx"), load_external_data=False).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert dims["point_coords"][1] == dims["point_labels"][1] and isinstance(dims["point_labels"][1], str)
    assert [o.name for o in graph.output] == ["masks", "iou_predictions", "mask", "iou_prediction"]


@pytest.mark.parametrize("size", SIZES)
def test_predictor_matches_metas_image_predictor(artifacts: dict[int, Path], size: int):
    """End to end on real photos (scikit-image): masks at the original size agree on >= 99.9% of pixels and the
    IoU predictions within 1e-3, for every prompt kind, multimask and single, and refining with the best mask."""
    from vitdeploy.sam2 import Predictor

    meta = meta_image_predictor(artifacts[size])
    photos = [skimage.data.coffee() if size == 512 else skimage.data.astronaut()]  # 400x600 shrunk, 512x512 grown
    worst_agreement, worst_iou = 1.0, 0.0
    with Predictor(artifacts[size], backend="onnxruntime_cpu") as ours:
        for photo in photos:
            with torch.no_grad():
                meta.set_image(photo)
            ours.set_image(photo)
            for name, prompt in prompts(*photo.shape[:2]).items():
                for multimask in (True, False):
                    with torch.no_grad():
                        masks, scores, low_res = meta.predict(**prompt, multimask_output=multimask)
                    got, got_scores, got_low = ours.predict(**prompt, multimask_output=multimask)
                    assert got.shape == masks.shape == (3 if multimask else 1, *photo.shape[:2]) and got.dtype == bool
                    worst_agreement = min(worst_agreement, float((got == masks).mean()))
                    worst_iou = max(worst_iou, float(np.abs(got_scores - scores).max()))
                    assert got_low.shape == low_res.shape == (len(got), size // 4, size // 4), name
                best = int(np.argmax(scores))  # single: the one mask
                with torch.no_grad():
                    masks, scores, _ = meta.predict(**prompt, mask_input=low_res[best:best + 1], multimask_output=False)
                got, got_scores, _ = ours.predict(**prompt, mask_input=got_low[best:best + 1], multimask_output=False)
                worst_agreement = min(worst_agreement, float((got == masks).mean()))
                worst_iou = max(worst_iou, float(np.abs(got_scores - scores).max()))
    print(f"size {size}: worst pixel agreement {worst_agreement:.7f}, worst IoU difference {worst_iou:.2e}")
    assert worst_agreement >= 0.999 and worst_iou <= 1e-3


@requires("openvino")
def test_predictor_on_openvino_matches_onnxruntime(artifacts: dict[int, Path], tmp_path: Path):
    """The Predictor on OpenVINO (the fp32 engines of both graphs) gives ONNX Runtime's masks; bf16 engines
    (where the CPU computes bf16) stay close; bench-sam2 times both runtimes."""
    import openvino
    from PIL import Image

    from vitdeploy.engine import build
    from vitdeploy.sam2 import Predictor

    artifact = tmp_path / "artifact"
    shutil.copytree(artifacts[512], artifact)
    build(artifact, "openvino", "fp32")
    engine = json.loads((artifact / "decoder.openvino.fp32.xml.json").read_text())
    assert (engine["backend"], engine["precision"], engine["io"]["point_coords"]["shape"]) == (
        "openvino", "fp32", [1, -1, 2])
    photo = skimage.data.chelsea()
    expected = {}
    with Predictor(artifact, backend="onnxruntime_cpu") as onnxruntime, Predictor(artifact, backend="openvino") as ov:
        assert ov.session.where == "decoder.openvino.fp32.xml"
        onnxruntime.set_image(photo)
        ov.set_image(photo)
        for name, prompt in prompts(*photo.shape[:2]).items():
            (masks, scores, _), (got, got_scores, _) = onnxruntime.predict(**prompt), ov.predict(**prompt)
            assert float((got == masks).mean()) >= 0.999 and float(np.abs(got_scores - scores).max()) <= 1e-3
            expected[name] = masks
    if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        build(artifact, "openvino", "bf16")
        with Predictor(artifact, backend="openvino", precision="bf16") as bf16:
            assert bf16.session.where == "decoder.openvino.bf16.xml"
            bf16.set_image(photo)
            got, _, _ = bf16.predict(**prompts(*photo.shape[:2])["box"])
        print(f"bf16 vs fp32 (box): pixel agreement {float((got == expected['box']).mean()):.5f}")
        assert float((got == expected["box"]).mean()) >= 0.95
    Image.fromarray(photo).save(tmp_path / "chelsea.png")
    run = CliRunner().invoke(main, ["bench-sam2", str(artifact), "--image", str(tmp_path / "chelsea.png"),
                                    "--warmup", "0", "--iterations", "1"])
    assert run.exit_code == 0, run.output
    rows = run.output.splitlines()[1:]
    assert [row.split()[2] for row in rows] == ["onnxruntime_cpu", "openvino"]
    assert "(model.openvino.fp32.xml + decoder.openvino.fp32.xml)" in rows[1]


@requires("tensorrt_rtx")
def test_tensorrt_rtx_builds_the_decoder_with_dynamic_points(artifacts: dict[int, Path], tmp_path: Path):
    """TensorRT-RTX parses decoder.onnx and builds it on the CPU with the point axis dynamic (1..max_points)."""
    from vitdeploy.sam2.engines import build_decoder_engine
    from vitdeploy.sam2.graph import read_decoder

    artifact = tmp_path / "artifact"
    shutil.copytree(artifacts[512], artifact)
    decoder = read_decoder(artifact, load_artifact(artifact).description)
    engine = build_decoder_engine(artifact, "tensorrt_rtx", "fp32", decoder)
    assert engine == artifact / "decoder.tensorrt_rtx.fp32.engine"
    record = json.loads((artifact / "decoder.tensorrt_rtx.fp32.engine.json").read_text())
    assert record["io"]["point_coords"]["shape"] == [1, -1, 2] and record["io"]["point_labels"]["shape"] == [1, -1]
    assert record["io"]["masks"]["shape"] == [1, 3, 128, 128]
    weights = sum(onnx.numpy_helper.to_array(t).nbytes
                  for t in onnx.load(str(artifact / "decoder.onnx")).graph.initializer)
    assert engine.stat().st_size >= 0.9 * weights


def test_verify_checks_the_decoder_graph(artifacts: dict[int, Path]):
    """verify's decoder checks: every prompt kind and output against Meta's predictor, within fp32 tolerance."""
    from vitdeploy.sam2.verify import decoder_checks

    checks = decoder_checks(load_artifact(artifacts[512]))
    assert len(checks) == 20 and all(check.passed for check in checks)
    assert {check.output for check in checks} >= {"masks (box)", "iou_prediction (mask)"}
    assert max(check.max_abs for check in checks) < 1e-4


def test_prompt_mistakes_are_one_line(artifacts: dict[int, Path]):
    from vitdeploy.sam2 import Predictor

    with Predictor(artifacts[512], backend="onnxruntime_cpu") as predictor:
        with pytest.raises(VitdeployError, match=r"^no image set: call set_image\(image\) before predict$"):
            predictor.predict(point_coords=[[1, 1]], point_labels=[1])
        predictor.set_image(skimage.data.chelsea())  # 300 x 451
        cases = {
            "prompt point (500, 10) is outside the image (451x300): expected 0 <= x <= 451 and 0 <= y <= 300":
                {"point_coords": [[500, 10]], "point_labels": [1]},
            "prompt point (-1, 5) is outside the image (451x300): expected 0 <= x <= 451 and 0 <= y <= 300":
                {"box": [-1, 5, 100, 100]},
            "box 100,5,10,100: expected X0,Y0,X1,Y1 with X0 <= X1 and Y0 <= Y1": {"box": [100, 5, 10, 100]},
            "point label 2: expected 1 (foreground) or 0 (background)": {"point_coords": [[5, 5]], "point_labels": [2]},
            "point_labels has shape [2]: expected 1": {"point_coords": [[5, 5]], "point_labels": [1, 1]},
            "no prompt: expected points (point_coords and point_labels) or a box": {},
            "mask_input has shape [1, 64, 64]: expected one low-resolution mask 128x128 (a previous predict's third "
            "result, one mask of it)": {"box": [1, 1, 50, 50], "mask_input": np.zeros((1, 64, 64))},
        }
        for message, prompt in cases.items():
            with pytest.raises(VitdeployError) as error:
                predictor.predict(**prompt)
            assert str(error.value) == message


def test_decoder_of_another_checkpoint_is_refused(artifacts: dict[int, Path], tmp_path: Path):
    """A decoder copied from another artifact (other checkpoint: other encoder weights) is one line."""
    from vitdeploy.sam2 import Predictor

    artifact = tmp_path / "mixed"
    shutil.copytree(artifacts[512], artifact)
    for name in ("decoder.onnx", "decoder.json"):
        shutil.copy(artifacts[1024] / name, artifact / name)
    encoder = json.loads((artifact / "vitdeploy.json").read_text())["weights"]["sha256"]
    other = json.loads((artifact / "decoder.json").read_text())
    with pytest.raises(VitdeployError) as error:
        Predictor(artifact, backend="onnxruntime_cpu")
    assert str(error.value) == (
        f"{artifact}/decoder.json belongs to an image encoder with weights sha256 "
        f"{other['encoder_weights_sha256'][:12]}.. (from {other['checkpoint']}), but this artifact's encoder has "
        f"{encoder[:12]}..: expected the decoder of the same SAM2 checkpoint; re-export the artifact with --decoder")


def test_checkpoint_without_decoder_weights_is_one_line(sam2_checkpoint: Path, tmp_path: Path):
    """conftest's checkpoint holds the image encoder and a few stray tensors, not SAM2's prompt encoder: refused
    before the encoder is exported, nothing written."""
    state = torch.load(sam2_checkpoint, weights_only=True)["model"]
    path = tmp_path / "encoder_only.pt"
    torch.save({"model": {k: v for k, v in state.items() if k.startswith("image_encoder.")}}, path)
    run = CliRunner().invoke(main, ["export", RECIPE, "-o", str(tmp_path / "art"), "--checkpoint", str(path),
                                    "--decoder"])
    assert (run.exit_code, run.output.splitlines()[-1]) == (
        1, f"Error: checkpoint {path} has no sam_prompt_encoder.* tensors (SAM2's decoder weights): expected SAM2's "
           "whole checkpoint ({'model': state dict}, with sam_prompt_encoder.*, sam_mask_decoder.* and no_mem_embed) "
           "for --decoder")
    assert not (tmp_path / "art").exists()
    run = CliRunner().invoke(main, ["export", "vit_small", "-o", str(tmp_path / "art"), "--decoder"])
    assert run.output.splitlines()[-1] == (
        "Error: --decoder for recipe 'vit_small' (family 'vit', random weights (seed 0)): expected a SAM2 recipe and "
        "--checkpoint with SAM2's whole checkpoint (the prompt encoder and mask decoder weights come from it)")


@requires("ray")
def test_served_sam2_route_gives_the_predictors_masks(artifacts: dict[int, Path], tmp_path: Path):
    """`vitdeploy serve` of the 512 artifact on loopback: POST /v1/sam2 with a photo and prompts answers the
    Predictor's masks and scores; the image id answers again without the image; bad prompts get a 4xx."""
    import io

    from PIL import Image

    from test_serve import free_port, post
    from vitdeploy.sam2 import Predictor
    from vitdeploy.serve import wire

    photo = skimage.data.chelsea()  # 300 x 451
    png = io.BytesIO()
    Image.fromarray(photo).save(png, format="PNG")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vitdeploy.cli", "serve", str(artifacts[512]), "--backend",
                                "onnxruntime_cpu", "--threads", "1", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        for line in process.stdout:  # blocks until serve says it serves (or exits)
            if line.startswith("serving "):
                break
        else:
            pytest.fail(f"vitdeploy serve did not start: {process.stderr.read()[-3000:]}")
        status, body = post(port, png.getvalue(), "image/png", "/v1/sam2?point=200,150&point=300,200,0")
        assert status == 200, body
        arrays, meta = wire.decode(body)
        with Predictor(artifacts[512], backend="onnxruntime_cpu") as predictor:
            predictor.set_image(photo)
            masks, scores, _ = predictor.predict(point_coords=[[200, 150], [300, 200]], point_labels=[1, 0])
            box_masks, box_scores, _ = predictor.predict(box=[50, 40, 300, 280], multimask_output=False)
        assert arrays["masks"].shape == (3, 300, 451) and np.array_equal(arrays["masks"].astype(bool), masks)
        assert np.allclose(arrays["scores"], scores) and meta["image_hw"] == [300, 451]
        status, body = post(port, b"", None, f"/v1/sam2?image_id={meta['image_id']}&box=50,40,300,280"
                                             "&multimask=false")
        arrays, _ = wire.decode(body)
        assert status == 200 and np.array_equal(arrays["masks"].astype(bool), box_masks)
        assert np.allclose(arrays["scores"], box_scores)
        refused = {
            f"/v1/sam2?image_id={meta['image_id']}&point=500,10": (
                422, "prompt point (500, 10) is outside the image (451x300): expected 0 <= x <= 451 and 0 <= y <= 300"),
            f"/v1/sam2?image_id={meta['image_id']}&point=5": (400, "point '5': expected X,Y or X,Y,LABEL"),
            f"/v1/sam2?image_id={meta['image_id']}": (422, "no prompt: expected points (point_coords and "
                                                           "point_labels) or a box"),
            "/v1/sam2?image_id=0123&point=5,5": (404, "image_id 0123 is not cached here: send the image (this "
                                                      "replica keeps the last images it embedded)"),
        }
        for path, (want, message) in refused.items():
            status, body = post(port, b"", None, path)
            assert (status, json.loads(body)["error"]) == (want, message), path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
