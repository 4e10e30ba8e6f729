"""`vitdeploy verify` of a SAM2 artifact with its decoder graph: decoder.onnx on ONNX Runtime vs Meta's own
SAM2ImagePredictor (its prompt encoder and mask decoder, from build_sam2 with the checkpoint) on the same
seeded pyramid, for each kind of prompt SAM2 takes. Every output (multimask logits and IoU, single mask and
IoU) is one check of the report, at the artifact's fp32 tolerance. Needs the `sam2` package.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.models.hieradet_sam2 import HieraDet

from vitdeploy.artifact import REPORT_FILE, ArtifactDirectory
from vitdeploy.atomic import write_json_atomic
from vitdeploy.errors import VitdeployError
from vitdeploy.models import state_dict_sha256
from vitdeploy.sam2.decoder import Sam2Decoder
from vitdeploy.sam2.graph import FEATURES, decoder_path, read_decoder
from vitdeploy.sam2.predictor import prepare_prompt
from vitdeploy.sam2.reference import meta_predictor, meta_sam2, set_features
from vitdeploy.sam2.runtime import onnxruntime_session
from vitdeploy.parity import OutputCheck, VerifyReport, per_sample_max_rel_l2, per_sample_min_cosine, within
from vitdeploy.verify import verify_onnx

ORIGINAL_HW = (300, 400)  # the "photo" size prompts are given in (the decoder sees them scaled to S x S)
# (name, prompt in original pixels, whether the previous prompt's best mask is fed back)
PROMPTS: list[tuple[str, dict[str, Any], bool]] = [
    ("1 point", {"point_coords": [[200, 150]], "point_labels": [1]}, False),
    ("3 points", {"point_coords": [[100, 80], [250, 160], [320, 240]], "point_labels": [1, 0, 1]}, False),
    ("box", {"box": [60, 40, 330, 260]}, False),
    ("box+point", {"box": [60, 40, 330, 260], "point_coords": [[200, 150]], "point_labels": [0]}, False),
    ("mask", {"point_coords": [[200, 150]], "point_labels": [1]}, True),
]


def decoder_checks(artifact: ArtifactDirectory, seed: int = 0, checkpoint: Path | None = None) -> list[OutputCheck]:
    """One check per prompt kind and decoder output (input_shape: [1, prompt points])."""
    description = artifact.description
    decoder = read_decoder(artifact.directory, description)
    source = checkpoint or Path(decoder.checkpoint)
    if not source.is_file():
        raise VitdeployError(f"the decoder's checkpoint {source} does not exist: pass --checkpoint with the SAM2 "
                             "checkpoint the artifact was exported from")
    with torch.device("meta"):
        trunk = timm.create_model(description.timm_name, **description.timm_kwargs)
    if not isinstance(trunk, HieraDet):
        raise VitdeployError(f"{description.timm_name} is a {type(trunk).__name__}: expected SAM2's HieraDet trunk")
    model: Any = meta_sam2(trunk, str(source), decoder.image_size)  # Meta's SAM2Base
    weights = Sam2Decoder(model.sam_prompt_encoder, model.sam_mask_decoder, model.no_mem_embed)
    if state_dict_sha256(weights) != decoder.weights_sha256:
        raise VitdeployError(f"checkpoint {source} does not hold the decoder weights decoder.onnx was exported with "
                             "(sha256 mismatch): pass --checkpoint with the weights the artifact was exported from")
    predictor = meta_predictor(model)
    generator = torch.Generator().manual_seed(seed)
    size = decoder.image_size
    levels = [torch.randn(1, 256, size // s, size // s, generator=generator) for s in (4, 8, 16)]
    feeds = {name: level.numpy() for name, level in zip(FEATURES, levels)}
    session = onnxruntime_session(decoder_path(artifact.directory))
    tolerance = description.tolerance["fp32"]
    checks: list[OutputCheck] = []
    previous: np.ndarray | None = None
    with torch.no_grad():
        set_features(predictor, levels[0], levels[1], levels[2], ORIGINAL_HW)
        for name, prompt, feed_back in PROMPTS:
            mask_input = previous if feed_back else None
            ours = session.run({**feeds, **prepare_prompt(decoder, ORIGINAL_HW, **prompt,
                                                          mask_input=mask_input).feed()})
            theirs: dict[str, np.ndarray] = {}
            for multimask, outputs in ((True, ("masks", "iou_predictions")), (False, ("mask", "iou_prediction"))):
                _, iou, low_res = predictor.predict(**prompt, mask_input=mask_input, multimask_output=multimask)
                theirs[outputs[0]], theirs[outputs[1]] = low_res[None], iou[None]
            previous = np.clip(ours["masks"][0, int(np.argmax(ours["iou_predictions"]))], -32, 32)[None]
            for output, expected in theirs.items():
                actual = ours[output]
                if output.startswith("mask"):
                    actual = np.clip(actual, -32, 32)  # what SAM2 returns (and takes back) of the logits
                max_abs = float(np.abs(actual - expected).max())
                cosine, rel_l2 = per_sample_min_cosine(expected, actual), per_sample_max_rel_l2(expected, actual)
                checks.append(OutputCheck(
                    input_shape=[1, len(prompt.get("point_coords", [])) + 2 * ("box" in prompt)],
                    output=f"{output} ({name})", shape=list(actual.shape), expected_shape=list(expected.shape),
                    max_abs=max_abs, max_rel=float(np.abs((actual - expected) / (np.abs(expected) + 1e-12)).max()),
                    min_cosine=cosine, max_rel_l2=rel_l2, nonfinite=int((~np.isfinite(actual)).sum()),
                    tol_max_abs=tolerance.max_abs, tol_min_cosine=tolerance.min_cosine,
                    tol_max_rel_l2=tolerance.max_rel, passed=within(tolerance, max_abs, cosine, rel_l2)))
    session.close()
    return checks


def verify_with_decoder(artifact: ArtifactDirectory, cuda: bool = False, batch_sizes: list[int] | None = None,
                        seed: int = 0, checkpoint: Path | None = None) -> VerifyReport:
    """verify_onnx of the encoder, then the decoder's checks in the same report (written into the artifact)."""
    report = verify_onnx(artifact, cuda, batch_sizes, seed=seed, checkpoint=checkpoint)
    report = replace(report, checks=report.checks + decoder_checks(artifact, seed, checkpoint))
    write_json_atomic(artifact.directory / REPORT_FILE, report.to_dict())
    return report
