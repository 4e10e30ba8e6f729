"""The module an artifact is exported from, as torch.export sees it: shared by the ONNX exporter and the other
compilers of an artifact (AOTInductor), which import this rather than the ONNX exporter and its verification."""

from __future__ import annotations

from typing import Any

import torch

from vitdeploy import families
from vitdeploy.description import Description, InputSpec
from vitdeploy.export.normalise import NormaliseInGraph
from vitdeploy.models import reference_models

EXAMPLE_BATCH = 2  # an example batch of 1 makes torch.export specialise the batch dimension to 1


def dynamic_shapes(spec: InputSpec) -> tuple[dict[int, Any]]:
    """Batch is always dynamic; height and width are multiples of the size rule when the input is dynamic."""
    dim = torch.export.Dim
    shapes: dict[int, Any] = {0: dim("batch", min=spec.batch.min, max=max(spec.batch.max, EXAMPLE_BATCH))}
    if spec.dynamic:
        m = spec.size_multiple
        (min_h, min_w), (max_h, max_w) = spec.min_hw, spec.max_hw
        axes = spec.axis_names()
        shapes[axes.index("height")] = m * dim("height_units", min=min_h // m, max=max_h // m)
        shapes[axes.index("width")] = m * dim("width_units", min=min_w // m, max=max_w // m)
    return (shapes,)


def rebuild_export_module(description: Description) -> torch.nn.Module:
    """The module an artifact was exported from, rebuilt from its description (its weights checked by their
    sha256): what other compilers of the artifact (AOTInductor) compile, so they compute what the ONNX does."""
    family = families.get(description.family)  # from the JSON, once
    model = reference_models(description, family)(description.input.opt_hw)
    wrapped = family.pyramid_module(family.adapt(model, description.input.dynamic), description.outputs,
                                    description.pyramid).eval()
    return NormaliseInGraph(wrapped, description.input).eval() if description.input.normalised_in_graph else wrapped
