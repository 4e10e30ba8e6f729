"""ctest aoti_package: compile a tiny module with AOTInductor into DIR/model.aoti.fp32.pt2, for test_aoti.

image [N, 3, H, W] -> stride8 (8x8 average pooling) and embedding (mean over H and W), as test_openvino's IR:
outputs the C++ test computes by hand. Dynamic batch 1..2 and H, W multiples of 8 in 8..32.
"""

import sys
from pathlib import Path

import torch


class Pool(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.nn.functional.avg_pool2d(image, 8), image.mean(dim=(2, 3))


directory = Path(sys.argv[1])
directory.mkdir(parents=True, exist_ok=True)
units = torch.export.Dim("units_h", min=1, max=4), torch.export.Dim("units_w", min=1, max=4)
shapes = ({0: torch.export.Dim("batch", min=1, max=2), 2: 8 * units[0], 3: 8 * units[1]},)
exported = torch.export.export(Pool(), (torch.zeros(2, 3, 16, 24),), dynamic_shapes=shapes)
torch._inductor.aoti_compile_and_package(exported, package_path=str(directory / "model.aoti.fp32.pt2"))
print(f"wrote {directory / 'model.aoti.fp32.pt2'}")
