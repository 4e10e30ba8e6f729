"""SAM2's prompt encoder + mask decoder as the artifact's second graph, `decoder.onnx` (export with --decoder).

The graph takes the encoder's pyramid as exported (`stride4`, `stride8`, `stride16`) and applies what SAM2
does to it before its mask decoder (`conv_s0`/`conv_s1` on stride4/stride8, `no_mem_embed` added to stride16),
so the encoder's outputs stay the plain pyramid. Prompts: `point_coords` [1, N, 2] (x, y in the encoder
input's pixels, N dynamic), `point_labels` [1, N] int32 (1 foreground, 0 background, 2 and 3 a box's
corners), `mask_input` [1, 1, 4h, 4w] (a previous low-resolution mask) used where `has_mask_input` [1] is 1.
Outputs: SAM2's multimask output (`masks` [1, 3, 4h, 4w] logits, `iou_predictions` [1, 3]) and its single
mask (`mask`, `iou_prediction`: token 0, or the best multimask when token 0 is unstable, as build_sam2's
dynamic_multimask_via_stability). The modules are Meta's own (`sam2` package: PromptEncoder, MaskDecoder with
SAM2.1's arguments) with the checkpoint's weights, built for the artifact's size S (embedding grid S/16), as
SAM2 builds them for `image_size` S.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from vitdeploy.checkpoints import read_state_dict
from vitdeploy.description import Description
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import describe_files
from vitdeploy.models import state_dict_sha256
from vitdeploy.optional import require
from vitdeploy.sam2.graph import DECODER_DESCRIPTION, DECODER_FILE, FEATURES, OUTPUTS, DecoderDescription, GraphIO

PREFIXES = ("sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
MAX_POINTS = 64  # the dynamic point axis's bound (TensorRT needs one): clicks plus a box's two corners
EXAMPLE_POINTS = 3  # torch.export specialises an axis whose example size is 1
# What build_sam2 sets for SAM2ImagePredictor (apply_postprocessing=True) and SAM2.1's configs
STABILITY = {"dynamic_multimask_via_stability": True, "stability_delta": 0.05, "stability_thresh": 0.98,
             "max_points": MAX_POINTS}
D_MODEL = 256
MASK_IN_CHANS = 16


class Sam2Decoder(nn.Module):
    """SAM2ImagePredictor's `_predict` after its features are set, for one image and one set of prompts."""

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, no_mem_embed: Tensor):
        super().__init__()
        self.prompt_encoder, self.mask_decoder = prompt_encoder, mask_decoder
        self.no_mem_embed = nn.Parameter(no_mem_embed.detach().clone(), requires_grad=False)

    def forward(self, stride4: Tensor, stride8: Tensor, stride16: Tensor, point_coords: Tensor, point_labels: Tensor,
                mask_input: Tensor, has_mask_input: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        decoder: Any = self.mask_decoder  # Meta's MaskDecoder and PromptEncoder (untyped modules)
        prompts: Any = self.prompt_encoder
        high_res = [decoder.conv_s0(stride4), decoder.conv_s1(stride8)]
        embedding = stride16 + self.no_mem_embed.reshape(1, -1, 1, 1)  # (HW, B, C) + [1, 1, C] in SAM2
        sparse = prompts._embed_points(point_coords, point_labels, pad=True)  # SAM2 pads when there is no box
        has_mask = has_mask_input.reshape(1, 1, 1, 1)
        no_mask = prompts.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embedding)
        dense = has_mask * prompts.mask_downscaling(mask_input) + (1 - has_mask) * no_mask
        masks, iou, _, _ = decoder.predict_masks(image_embeddings=embedding, image_pe=prompts.get_dense_pe(),
                                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                 repeat_image=False, high_res_features=high_res)
        mask, mask_iou = decoder._dynamic_multimask_via_stability(masks, iou)
        return masks[:, 1:], iou[:, 1:], mask, mask_iou


def meta_modules(image_size: int) -> tuple[nn.Module, nn.Module]:
    """Meta's PromptEncoder and MaskDecoder as SAM2Base builds them for `image_size` (SAM2.1's arguments)."""
    sam = require("sam2.modeling.sam.prompt_encoder")
    decoder = require("sam2.modeling.sam.mask_decoder")
    transformer = require("sam2.modeling.sam.transformer")
    grid = image_size // 16
    prompt = sam.PromptEncoder(embed_dim=D_MODEL, image_embedding_size=(grid, grid),
                               input_image_size=(image_size, image_size), mask_in_chans=MASK_IN_CHANS)
    mask = decoder.MaskDecoder(
        num_multimask_outputs=3, transformer=transformer.TwoWayTransformer(depth=2, embedding_dim=D_MODEL,
                                                                           mlp_dim=2048, num_heads=8),
        transformer_dim=D_MODEL, iou_head_depth=3, iou_head_hidden_dim=256, use_high_res_features=True,
        iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True, dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=STABILITY["stability_delta"],
        dynamic_multimask_stability_thresh=STABILITY["stability_thresh"])
    return prompt, mask


def decoder_keys(state: dict[str, Tensor], path: Path) -> dict[str, list[str]]:
    """The checkpoint's keys under each decoder prefix; a checkpoint without one of them is a one-line error."""
    used = {prefix: [k for k in state if k.startswith(prefix)] for prefix in PREFIXES}
    absent = [prefix for prefix, keys in used.items() if not keys]
    if absent:
        raise VitdeployError(
            f"checkpoint {path} has no {absent[0]}{'*' if absent[0].endswith('.') else ''} tensors (SAM2's decoder "
            "weights): expected SAM2's whole checkpoint ({'model': state dict}, with sam_prompt_encoder.*, "
            "sam_mask_decoder.* and no_mem_embed) for --decoder")
    return used


def check_decoder_checkpoint(path: Path) -> None:
    """Before a long export: the checkpoint holds decoder weights, and Meta's sam2 package is installed."""
    require("sam2.modeling.sam.mask_decoder")
    decoder_keys(read_state_dict(path)[0], path)


def load_decoder(path: Path, image_size: int) -> tuple[Sam2Decoder, dict[str, Any]]:
    """The decoder module with the checkpoint's prompt encoder, mask decoder and no_mem_embed; and a record of
    the keys it used."""
    state, key = read_state_dict(path)
    used = decoder_keys(state, path)
    prompt, mask = meta_modules(image_size)
    try:
        prompt.load_state_dict({k[len(PREFIXES[0]):]: state[k] for k in used[PREFIXES[0]]}, strict=True)
        mask.load_state_dict({k[len(PREFIXES[1]):]: state[k] for k in used[PREFIXES[1]]}, strict=True)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise VitdeployError(f"checkpoint {path}: its decoder tensors do not fit SAM2.1's prompt encoder and mask "
                             f"decoder ({reason}): expected a SAM2.1 checkpoint") from None
    module = Sam2Decoder(prompt, mask, state["no_mem_embed"]).eval()
    return module, {"checkpoint_key": key, "used_prefixes": {p: len(keys) for p, keys in used.items()}}


def decoder_io(image_size: int) -> tuple[dict[str, GraphIO], dict[str, GraphIO]]:
    masks = image_size // 4
    inputs = {**{name: GraphIO("float32", (1, D_MODEL, image_size // s, image_size // s))
                 for name, s in zip(FEATURES, (4, 8, 16))},
              "point_coords": GraphIO("float32", (1, "points", 2)), "point_labels": GraphIO("int32", (1, "points")),
              "mask_input": GraphIO("float32", (1, 1, masks, masks)), "has_mask_input": GraphIO("float32", (1,))}
    outputs = {"masks": GraphIO("float32", (1, 3, masks, masks)), "iou_predictions": GraphIO("float32", (1, 3)),
               "mask": GraphIO("float32", (1, 1, masks, masks)), "iou_prediction": GraphIO("float32", (1, 1))}
    return inputs, outputs


def example_inputs(image_size: int, points: int = EXAMPLE_POINTS, seed: int = 0) -> dict[str, Tensor]:
    """Inputs of the decoder's shapes (random features and points, a random previous mask in use)."""
    generator = torch.Generator().manual_seed(seed)
    inputs, _ = decoder_io(image_size)
    shapes = {name: tuple(points if d == "points" else int(d) for d in io.shape) for name, io in inputs.items()}
    feed = {name: torch.randn(shapes[name], generator=generator) for name in (*FEATURES, "mask_input")}
    feed["point_coords"] = torch.rand(shapes["point_coords"], generator=generator) * image_size
    feed["point_labels"] = torch.randint(0, 4, shapes["point_labels"], generator=generator, dtype=torch.int32)
    feed["has_mask_input"] = torch.ones(1)
    return {name: feed[name] for name in inputs}


def export_decoder(checkpoint: Path, encoder: Description, directory: Path, opset: int) -> DecoderDescription:
    """Write `decoder.onnx` and `decoder.json` for the encoder `encoder` (its size, its weights' sha256) into
    `directory` (an export's staging directory)."""
    height, width = encoder.input.opt_hw
    if height != width:
        raise VitdeployError(f"--decoder at size {height}x{width}: expected a square size (SAM2's image_size)")
    module, record = load_decoder(checkpoint, height)
    inputs, outputs = decoder_io(height)
    points = torch.export.Dim("points", min=1, max=MAX_POINTS)
    dynamic = {name: ({1: points} if name.startswith("point_") else None) for name in inputs}
    started = time.perf_counter()
    path = directory / DECODER_FILE
    with torch.no_grad():
        program = torch.onnx.export(module, tuple(example_inputs(height).values()), dynamo=True,
                                    opset_version=opset, input_names=list(inputs), output_names=list(OUTPUTS),
                                    dynamic_shapes=dynamic, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    reference = require("sam2.modeling.sam.mask_decoder").__name__
    description = DecoderDescription(
        image_size=height, embedding_hw=(height // 16, height // 16), mask_hw=(height // 4, height // 4),
        inputs=inputs, outputs=outputs, checkpoint=str(checkpoint), checkpoint_key=record["checkpoint_key"],
        used_prefixes=record["used_prefixes"], weights_sha256=state_dict_sha256(module),
        encoder_weights_sha256=encoder.weights.sha256, multimask=dict(STABILITY), mask_threshold=0.0,
        reference=f"sam2.sam2_image_predictor.SAM2ImagePredictor ({reference} with the checkpoint's weights)",
        file=describe_files([path])[DECODER_FILE], opset=opset,
        versions=dict(encoder.versions), export_seconds=round(time.perf_counter() - started, 2))
    (directory / DECODER_DESCRIPTION).write_text(description.to_json())
    return description
