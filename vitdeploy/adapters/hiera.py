"""Export-friendly rewrites of timm's Hiera and HieraDet (SAM2 image encoder).

timm's Hiera computes its mask-unit attention with 5-D ``scaled_dot_product_attention``, which the
torch.export ONNX exporter rejects, and builds Unroll, Reroll and the mask-unit grid from ``img_size``
at construction, so a timm Hiera runs at one size. The rewrites merge the window dim into the heads
(4-D attention, same numbers) and take every size from the input at run time, so one graph serves a
range of sizes where the position embedding allows it: abswin Hiera (a window embedding tiled over
the mask units plus a global one resampled to the token grid) and HieraDet. Plain Hiera stores one
embedding per token of its build size and stays fixed. Position embeddings are resampled with
:func:`resample_bicubic` (MatMuls), since ``F.interpolate``'s antialiased Resize fails TensorRT's parser.

Rewriting swaps each module's class for a subclass defined here, so the state dict, ``isinstance``
checks and everything not overridden stay timm's.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from timm.models._features import feature_take_indices
from timm.models.hiera import Hiera, MaskUnitAttention
from timm.models.hieradet_sam2 import HieraDet, MultiScaleBlock
from torch import Tensor, nn

from vitdeploy.adapters.resample import resample_bicubic
from vitdeploy.errors import VitdeployError

Strides = Sequence[Tuple[int, int]]


def _tile(window: Tensor, height: int, width: int) -> Tensor:
    """Repeat a ``[1, C, wh, ww]`` window embedding over an ``height x width`` grid (multiples of it)."""
    return window.tile(1, 1, height // window.shape[-2], width // window.shape[-1])


def _pairs(schedule: Sequence[Tuple[int, ...]]) -> List[Tuple[int, int]]:
    """timm's (sy, sx) unroll strides, typed as pairs (timm types them ``Tuple[int, ...]``; images have two)."""
    return [(sy, sx) for sy, sx in schedule]


def _unroll(x: Tensor, schedule: Strides, unit_h: int, unit_w: int) -> Tensor:
    """timm's ``Unroll`` of an NHWC token grid of ``unit_h x unit_w`` times all strides: ``[B, H*W, C]``.

    Every size is written as a unit count times a constant: torch.export then tracks products of two
    symbols instead of nested floor divisions, which take sympy minutes to reason about.
    """
    batch, _, _, dim = x.shape
    fy, fx = math.prod(s[0] for s in schedule), math.prod(s[1] for s in schedule)
    tokens = fy * unit_h * fx * unit_w
    rows = batch
    for sy, sx in schedule:
        fy, fx = fy // sy, fx // sx
        x = x.reshape(rows, unit_h * fy, sy, unit_w * fx, sx, dim).permute(0, 2, 4, 1, 3, 5)
        rows = rows * sy * sx
        x = x.reshape(rows, unit_h * fy, unit_w * fx, dim)
    return x.reshape(batch, tokens, dim)


def _reroll(x: Tensor, schedule: Strides, unit_h: int, unit_w: int) -> Tensor:
    """timm's ``Reroll`` (no mask) back to NHWC; the block's grid is ``unit_h x unit_w`` times its strides."""
    batch, _, dim = x.shape
    fy, fx = math.prod(s[0] for s in schedule), math.prod(s[1] for s in schedule)
    mu_y, mu_x = 1, 1
    for sy, sx in schedule:
        fy, fx = fy // sy, fx // sx
        # [B, Sy, Sx, N/(Sy*Sx), MUy, MUx, C] -> [B, N/(Sy*Sx), Sy, MUy, Sx, MUx, C]
        x = x.reshape(batch, sy, sx, unit_h * fy * unit_w * fx, mu_y, mu_x, dim).permute(0, 3, 1, 4, 2, 5, 6)
        mu_y, mu_x = mu_y * sy, mu_x * sx
        x = x.reshape(batch, unit_h * fy * unit_w * fx, mu_y, mu_x, dim)
    x = x.reshape(batch, unit_h, unit_w, mu_y, mu_x, dim).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, unit_h * mu_y, unit_w * mu_x, dim)


class _MaskUnitAttention(MaskUnitAttention):
    """Mask-unit (or global) attention with windows merged into heads: SDPA sees 4-D tensors."""

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        if self.use_mask_unit_attn:  # tokens per window before q pooling is a constant
            per_window = self.q_stride * self.window_size
            windows = tokens // per_window
        else:
            per_window, windows = tokens, 1
        qkv = self.qkv(x).reshape(batch, per_window, windows, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 2, 1, 5).unbind(0)  # [B, heads, windows, per_window, head_dim]
        if self.q_stride > 1:
            q = q.reshape(batch, self.heads, windows, self.q_stride, per_window // self.q_stride, self.head_dim)
            q = q.amax(dim=3)
        q, k, v = q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1) @ v
        x = x.reshape(batch, self.heads, windows, per_window // self.q_stride, self.head_dim).transpose(1, 3)
        return self.proj(x.reshape(batch, tokens // self.q_stride, self.dim_out))


class _Hiera(Hiera):
    """Hiera whose token grid, unroll and reroll follow the input size (mask-free inference only)."""

    def _embed(self, x: Tensor) -> Tuple[Tensor, int, int]:
        """Patch embed, position embedding and unroll: tokens, and the grid in units of all unroll strides."""
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # B, h, w, C
        _, height, width, dim = x.shape
        if self.pos_embed is None:  # separate (video) embeddings, which _check rejects
            raise VitdeployError(f"{type(self).__name__} has separate position embeddings; expected an image Hiera")
        if self.pos_embed_win is not None:
            pos_embed = resample_bicubic(self.pos_embed, (height, width), antialias=True)
            pos_embed = pos_embed + _tile(self.pos_embed_win, height, width)
            x = x + pos_embed.permute(0, 2, 3, 1)
        else:
            if height * width != self.pos_embed.shape[1]:
                built = [n * s for n, s in zip(self.tokens_spatial_shape, self.patch_stride)]
                raise VitdeployError(f"{type(self).__name__} got a {height}x{width} token grid; its position "
                                     f"embedding holds the grid of {built[0]}x{built[1]} inputs only")
            x = x + self.pos_embed.reshape(1, height, width, dim)
        schedule = _pairs(self.unroll.schedule)
        unit_h = height // math.prod(s[0] for s in schedule)
        unit_w = width // math.prod(s[1] for s in schedule)
        return _unroll(x, schedule, unit_h, unit_w), unit_h, unit_w

    def forward_intermediates(
            self,
            x: Tensor,
            mask: Optional[Tensor] = None,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = True,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
            coarse: bool = True,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """timm's ``Hiera.forward_intermediates`` with sizes from the input."""
        final, intermediates = self._intermediates(x, mask, indices, norm, stop_early, output_fmt, coarse)
        if intermediates_only:
            return intermediates
        return final, intermediates

    def _intermediates(self, x: Tensor, mask: Optional[Tensor], indices: Optional[Union[int, List[int]]],
                       norm: bool, stop_early: bool, output_fmt: str, coarse: bool) -> Tuple[Tensor, List[Tensor]]:
        """The final tokens and the chosen intermediates (forward_intermediates' arguments)."""
        if mask is not None:
            raise VitdeployError("an export-adapted Hiera got a mask; expected mask=None (no MAE masking)")
        assert not norm, 'normalization of features not supported'
        assert output_fmt in ('NCHW', 'NHWC'), 'Output format must be one of NCHW, NHWC.'
        if coarse:
            take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
            take_indices = [self.stage_ends[i] for i in take_indices]
            max_index = self.stage_ends[max_index]
        else:
            take_indices, max_index = feature_take_indices(len(self.blocks), indices)

        x, unit_h, unit_w = self._embed(x)
        intermediates = []
        for i, blk in enumerate(self.blocks[:max_index + 1] if stop_early else self.blocks):
            x = blk(x)
            if i in take_indices:
                x_int = _reroll(x, _pairs(self.reroll.schedule[i][0]), unit_h, unit_w)
                intermediates.append(x_int.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else x_int)
        return x, intermediates

    def forward_features(  # type: ignore[override]  # timm annotates Tensor, yet returns a tuple too, as here
            self,
            x: Tensor,
            mask: Optional[Tensor] = None,
            return_intermediates: bool = False,
    ) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        final, intermediates = self._intermediates(x, mask=mask, indices=None, norm=False, stop_early=False,
                                                   output_fmt='NHWC', coarse=True)
        return (final, intermediates) if return_intermediates else final


class _MultiScaleBlock(MultiScaleBlock):
    """HieraDet block, same numbers; windows are counted by one ceil-division and every reshape is explicit.

    timm's modulo-of-modulo padding and ``-1`` reshapes give torch.export nested floor divisions:
    the stock block exports (dynamic H/W) about 10x slower.
    """

    def _window_attention(self, x: Tensor, out_height: int, out_width: int) -> Tensor:
        batch, height, width, dim = x.shape
        wy, wx = self.window_size
        rows, cols = (height + wy - 1) // wy, (width + wx - 1) // wx
        x = F.pad(x, (0, 0, 0, cols * wx - width, 0, rows * wy - height))
        x = x.reshape(batch, rows, wy, cols, wx, dim).permute(0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, wy, wx, dim)
        x = self.attn(x)  # q pooling may shrink each window
        _, oy, ox, dim = x.shape
        x = x.reshape(batch, rows, cols, oy, ox, dim).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(batch, rows * oy, cols * ox, dim)[:, :out_height, :out_width, :]

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x  # B, H, W, C
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = self.pool(shortcut.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if self.is_windowed:
            x = self._window_attention(x, shortcut.shape[1], shortcut.shape[2])
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path1(self.ls1(x))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class _HieraDet(HieraDet):
    """HieraDet whose position embedding is resampled with MatMuls instead of a cubic Resize."""

    def _pos_embed(self, x: Tensor) -> Tensor:
        height, width = x.shape[1:3]
        pos_embed = resample_bicubic(self.pos_embed, (height, width), antialias=False)
        pos_embed = pos_embed + _tile(self.pos_embed_window, height, width)
        return x + pos_embed.permute(0, 2, 3, 1)


def _check(model: nn.Module) -> Union[Hiera, HieraDet]:
    """`model`, checked to be an image Hiera or a HieraDet (timm's, or rewritten here)."""
    if not isinstance(model, (Hiera, HieraDet)) or type(model) not in (Hiera, _Hiera, HieraDet, _HieraDet):
        raise VitdeployError(f"the hiera family got a {type(model).__name__}; expected a timm Hiera or HieraDet")
    if isinstance(model, Hiera) and (len(model.patch_stride) != 2 or model.pos_embed_spatial is not None):
        raise VitdeployError("Hiera with a video (3-D) patch embedding; expected an image Hiera")
    return model


def hiera_supports_dynamic(model: nn.Module) -> bool:
    """Abswin Hiera and HieraDet resample their position embedding to any grid; plain Hiera cannot."""
    checked = _check(model)
    return isinstance(checked, HieraDet) or checked.pos_embed_win is not None


def hiera_size_multiple(model: nn.Module) -> int:
    """Input sides must give a token grid that the window embedding tiles and every q-pool halves exactly.

    Hiera: patch stride x lcm(mask unit, q_stride ** unrolls); HieraDet: patch stride x
    lcm(first window, q_stride ** q-pool stages). Both are 32 for every timm config.
    """
    checked = _check(model)
    stride: Sequence[int]
    window: Sequence[int]
    if isinstance(checked, HieraDet):
        stride = checked.patch_embed.proj.stride
        window = checked.pos_embed_window.shape[-2:]
        pools = len(checked.q_pool_blocks)
    else:
        stride, window, pools = checked.patch_stride, checked.mask_unit_size, len(checked.unroll.schedule)
    return math.lcm(*(s * math.lcm(w, q ** pools) for s, w, q in zip(stride, window, checked.q_stride)))


def adapt_hiera(model: nn.Module, dynamic: bool) -> nn.Module:
    """Rewrite a timm Hiera or HieraDet in place for export (same numbers as timm); returns it.

    The rewritten model reads every size from its input, so an abswin Hiera or a HieraDet runs at
    any size that is a multiple of :func:`hiera_size_multiple`, whatever ``img_size`` it was built for.
    """
    _check(model)
    if dynamic and not hiera_supports_dynamic(model):
        raise VitdeployError(f"{type(model).__name__} with a per-token position embedding runs at its build size "
                             "only; expected a fixed export, or an abswin Hiera / HieraDet for dynamic sizes")
    swaps: dict[type[nn.Module], type[nn.Module]]
    if isinstance(model, HieraDet):
        model.__class__ = _HieraDet
        swaps = {MultiScaleBlock: _MultiScaleBlock}
    else:
        model.__class__ = _Hiera
        swaps = {MaskUnitAttention: _MaskUnitAttention}
    for module in model.modules():
        if type(module) in swaps:
            module.__class__ = swaps[type(module)]
    return model
