"""Grounding DINO fast path: exact re-formulations of transformers' slow parts, swapped into a model.

``enable_dino_fast_path(model)`` changes how a loaded ``GroundingDinoForObjectDetection`` computes, never
what: parameters and ``state_dict`` keys are untouched, and in float32 outputs match the original to
float32 rounding (see tests/grounded/test_fast_dino.py and the benchmark).

- Multi-scale deformable attention: transformers loops over feature levels with one ``grid_sample``
  per level, then stacks and weights the samples. Here the four bilinear corners of every sampling
  point become rows of one value table, and ``F.embedding_bag(mode="sum")`` gathers and weights them
  (corner weight x attention weight) for all levels, points and heads in one call.
- Image <-> text fusion attention: with few text tokens T, the 1024-wide vision projections are
  re-associated into T-wide products (``(v W_q) k^T = v (W_q k^T)``; ``(P V_t) W_o = P (V_t W_o)``;
  ``P_t (v W_v) = (P_t v) W_v``), about 20x fewer multiply-adds on the ~22k image tokens.
- Encoder feed-forward: the ~22k image tokens go through fc1 -> ReLU -> fc2 -> residual -> LayerNorm
  in row chunks whose 2048-wide hidden activations stay in cache (all per-token ops, so exact),
  instead of materialising a 22k x 2048 tensor (180 MB) and walking it three times.
- Caches: the text encoder's output per caption and the image backbone's output for the last image,
  so a repeated prompt skips BERT and a new prompt on the same image skips the Swin backbone.
- Options: ``dtype=torch.bfloat16``/``float16`` (linear/conv weights in that dtype, forward under
  ``torch.autocast``); ``quantize_int8=True`` (``torch.ao`` dynamic int8 linears, CPU).
"""

from __future__ import annotations

import functools
import types
import warnings
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grounded.detectors.fast_feed_forward import chunked_deformable_layer_forward, feed_forward_in_chunks

__all__ = [
    "FastMultiScaleDeformableAttention",
    "chunked_deformable_layer_forward",
    "clear_fast_path_caches",
    "feed_forward_in_chunks",
    "enable_dino_fast_path",
    "fused_bi_attention_forward",
    "is_fast_path_enabled",
    "multi_scale_deformable_attention",
]

_FAST_FLAG = "_grounded_fast_path"
# Queries per embedding_bag call: bounds the temporary index/weight tensors (~60 MB at 8192 x 8 heads
# x 64 corner samples) while keeping each call large enough to parallelise.
_QUERY_CHUNK = 8192


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention over all levels in one gather: what transformers' per-level loop computes.

    Args:
        value: B x S x H x D, the levels' value maps flattened row-major and concatenated
            (S = sum of h_l * w_l over levels, in ``spatial_shapes_list`` order).
        spatial_shapes_list: L pairs (h_l, w_l).
        sampling_locations: B x Q x H x L x P x 2, (x, y) relative to each level's map
            (``grid_sample(align_corners=False)`` convention: pixel centres at (i + 0.5) / size).
        attention_weights: B x Q x H x L x P, softmax-normalised over L x P.

    Returns:
        B x Q x (H * D) in ``value``'s dtype. Corners outside a map contribute zero (``grid_sample``'s
        ``padding_mode="zeros"``): every map gets a one-pixel zero border and coordinates are clamped
        onto it, so no per-corner validity test is needed.
    """
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    if sum(h * w for h, w in spatial_shapes_list) != S:
        raise ValueError(f"spatial shapes {spatial_shapes_list} do not add up to the {S} value rows")
    table, padded_starts = _padded_value_table(value, spatial_shapes_list)  # (B*H*S') x D
    rows_per_head = table.shape[0] // (B * H)
    device = value.device
    shapes = torch.tensor(spatial_shapes_list, device=device, dtype=torch.float32)  # L x 2 (h, w)
    heights, widths = shapes[:, 0].view(L, 1), shapes[:, 1].view(L, 1)  # each L x 1
    row_len = widths + 2  # L x 1, padded row length
    starts = torch.tensor(padded_starts, device=device, dtype=torch.float32).view(L, 1)  # L x 1
    # Table row of each corner relative to corner (x0, y0), plus the first row of each (batch, head):
    # B x 1 x H x L x 1 x 4, corners (x0,y0), (x0+1,y0), (x0,y0+1), (x0+1,y0+1).
    corners = torch.cat([torch.zeros_like(row_len), torch.ones_like(row_len), row_len, row_len + 1], 1)
    head_rows = torch.arange(B * H, device=device, dtype=torch.int32) * rows_per_head
    corner_rows = corners.to(torch.int32).view(1, 1, 1, L, 1, 4) + head_rows.view(B, 1, H, 1, 1, 1)
    outputs = []
    for q0 in range(0, Q, _QUERY_CHUNK):
        loc = sampling_locations[:, q0 : q0 + _QUERY_CHUNK].float()  # B x q x H x L x P x 2
        attn = attention_weights[:, q0 : q0 + _QUERY_CHUNK].float()  # B x q x H x L x P
        q = loc.shape[1]
        # Padded pixel coordinates: x * w - 0.5 (grid_sample), + 1 for the border, clamped onto it.
        x = torch.addcmul(torch.full_like(widths, 0.5), loc[..., 0], widths).clamp_(min=0.0)
        x = torch.minimum(x, widths + 1, out=x)  # B x q x H x L x P
        y = torch.addcmul(torch.full_like(heights, 0.5), loc[..., 1], heights).clamp_(min=0.0)
        y = torch.minimum(y, heights + 1, out=y)
        x0, y0 = x.floor(), y.floor()
        fx, fy = x.sub_(x0), y.sub_(y0)  # fractional parts, in place
        wy1 = fy.mul_(attn)  # (fy * attn) in place
        wy0 = attn - wy1  # (1 - fy) * attn
        gx = 1 - fx
        weights = loc.new_empty(*fx.shape, 4)  # B x q x H x L x P x 4, corner order as corner_rows
        for k, (wy, wx) in enumerate(((wy0, gx), (wy0, fx), (wy1, gx), (wy1, fx))):
            torch.mul(wy, wx, out=weights[..., k])
        # Head-local row of corner (x0, y0); exact: rows stay far below 2**24 (float32's integer range).
        base = torch.addcmul(x0.add_(starts), y0, row_len).to(torch.int32)  # B x q x H x L x P
        index = base.unsqueeze(-1) + corner_rows  # B x q x H x L x P x 4
        bags = F.embedding_bag(
            index.reshape(B * q * H, L * P * 4),  # one bag per (batch, query, head)
            table,
            per_sample_weights=weights.reshape(B * q * H, L * P * 4).to(table.dtype),  # (dy, dx) order
            mode="sum",
        )  # (B*q*H) x D
        outputs.append(bags.view(B, q, H * D))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def _padded_value_table(
    value: torch.Tensor, spatial_shapes_list: list[tuple[int, int]]
) -> tuple[torch.Tensor, list[int]]:
    """B x S x H x D -> ((B*H*S') x D table, first padded row of each level).

    Each level's h x w map gets a one-pixel zero border ((h+2) x (w+2)); one zero guard row of the
    largest padded width follows, so the (zero-weighted) far corner of a point clamped onto the
    bottom-right border still indexes inside the table.
    """
    B, S, H, D = value.shape
    starts, start = [], 0
    for h, w in spatial_shapes_list:
        starts.append(start)
        start += (h + 2) * (w + 2)
    guard = max(w for _, w in spatial_shapes_list) + 3
    table = value.new_zeros(B, H, start + guard, D)  # B x H x S' x D
    offset = 0
    for (h, w), first in zip(spatial_shapes_list, starts, strict=True):
        level = value[:, offset : offset + h * w].view(B, h, w, H, D)  # B x h x w x H x D
        level = level.permute(0, 3, 1, 2, 4)  # B x H x h x w x D
        padded = table[:, :, first : first + (h + 2) * (w + 2)].view(B, H, h + 2, w + 2, D)
        padded[:, :, 1 : h + 1, 1 : w + 1].copy_(level)
        offset += h * w
    return table.view(-1, D), starts


class FastMultiScaleDeformableAttention(nn.Module):
    """Drop-in for transformers' parameter-free ``MultiScaleDeformableAttention`` (same forward).

    Inference only: when autograd needs gradients it calls ``original`` (transformers' module).
    """

    def __init__(self, original: nn.Module | None = None) -> None:
        super().__init__()
        self.original = original  # transformers' module (no parameters)

    def forward(
        self,
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        value_spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        im2col_step: int,
    ) -> torch.Tensor:
        """Shapes as :func:`multi_scale_deformable_attention`; the extra arguments are unused."""
        if self.original is not None and torch.is_grad_enabled():
            args = (value, value_spatial_shapes, value_spatial_shapes_list, level_start_index)
            if any(t.requires_grad for t in (value, sampling_locations, attention_weights)):
                return self.original(*args, sampling_locations, attention_weights, im2col_step)
        return multi_scale_deformable_attention(
            value, list(value_spatial_shapes_list), sampling_locations, attention_weights
        )


def fused_bi_attention_forward(
    self: nn.Module,
    vision_features: torch.Tensor,
    text_features: torch.Tensor,
    vision_attention_mask: torch.Tensor | None = None,
    text_attention_mask: torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``GroundingDinoBiMultiHeadAttention.forward`` with the vision projections re-associated.

    Bound to a module instance (``types.MethodType``); reads its linears. vision_features: B x N x Dv,
    text_features: B x T x Dt, masks True on padding (B x N / B x T). Returns, as the original,
    ((vision output B x N x Dv, vision attention (B*H) x N x T),
     (text output B x T x Dt, text attention (B*H) x T x N)).
    """
    if self.training:
        return type(self).forward(
            self, vision_features, text_features, vision_attention_mask, text_attention_mask
        )
    B, N, Dv = vision_features.shape
    T = text_features.shape[1]
    H, hd = self.num_heads, self.head_dim
    text_keys = self.text_proj(text_features).view(B, T, H, hd)  # B x T x H x hd
    text_values = self.values_text_proj(text_features).view(B, T, H, hd)  # B x T x H x hd
    # logits = scale * (v W_q^T + b_q) . k  =  v (scale W_q^T k) + scale b_q . k
    w_q = self.vision_proj.weight.view(H, hd, Dv)  # H x hd x Dv
    b_q = self.vision_proj.bias.view(H, hd)  # H x hd
    q_to_text = torch.einsum("hdc,bthd->bcht", w_q, text_keys) * self.scale  # B x Dv x H x T
    q_bias = torch.einsum("hd,bthd->bht", b_q, text_keys) * self.scale  # B x H x T
    logits = torch.bmm(vision_features, q_to_text.reshape(B, Dv, H * T)).view(B, N, H, T)
    logits = logits + q_bias.unsqueeze(1)  # B x N x H x T
    # As the original: one global shift and a clamp (a no-op in float32 unless logits exceed 5e4).
    logits = (logits - logits.max()).clamp(min=-50000, max=50000)

    text_logits = logits.permute(0, 2, 3, 1)  # B x H x T x N
    text_logits = (text_logits - text_logits.amax(dim=-1, keepdim=True)).clamp(min=-50000, max=50000)
    if vision_attention_mask is not None:
        text_logits = text_logits.masked_fill(vision_attention_mask[:, None, None, :], float("-inf"))
    text_probs = text_logits.softmax(dim=-1)  # B x H x T x N
    if text_attention_mask is not None:
        logits = logits.masked_fill(text_attention_mask[:, None, None, :], float("-inf"))
    vision_probs = logits.softmax(dim=-1)  # B x N x H x T

    # vision output = sum_h P_h (V_t,h W_o,h^T) + b_o
    w_o = self.out_vision_proj.weight.view(Dv, H, hd)  # Dv x H x hd
    value_out = torch.einsum("bthd,chd->bhtc", text_values, w_o)  # B x H x T x Dv
    vision_out = torch.bmm(vision_probs.reshape(B, N, H * T), value_out.reshape(B, H * T, Dv))
    vision_out = vision_out + self.out_vision_proj.bias  # B x N x Dv

    # text output, per head: P_t (v W_v^T + b_v) = (P_t v) W_v^T + rowsum(P_t) b_v
    pooled = torch.bmm(text_probs.reshape(B, H * T, N), vision_features).view(B, H, T, Dv)  # B x H x T x Dv
    w_v = self.values_vision_proj.weight.view(H, hd, Dv)  # H x hd x Dv
    b_v = self.values_vision_proj.bias.view(H, hd)  # H x hd
    text_heads = torch.einsum("bhtc,hdc->bthd", pooled, w_v)  # B x T x H x hd
    text_heads = text_heads + text_probs.sum(dim=-1).transpose(1, 2).unsqueeze(-1) * b_v
    text_out = self.out_text_proj(text_heads.reshape(B, T, H * hd))  # B x T x Dt

    vision_attn = vision_probs.permute(0, 2, 1, 3).reshape(B * H, N, T)  # (B*H) x N x T
    text_attn = text_probs.reshape(B * H, T, N)  # (B*H) x T x N
    return (vision_out, vision_attn), (text_out, text_attn)


def enable_dino_fast_path(
    model: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    quantize_int8: bool = False,
    text_cache_size: int = 16,
    backbone_cache_size: int = 1,
) -> nn.Module:
    """Swap the fast implementations into a ``GroundingDinoForObjectDetection`` (in place; returned).

    Args:
        model: transformers' Grounding DINO (``GroundingDinoForObjectDetection`` or ``GroundingDinoModel``).
        dtype: ``None``/``torch.float32`` keeps float32 (bit-for-bit the same parameters);
            ``torch.bfloat16``/``torch.float16`` stores linear and conv weights in that dtype and runs
            the forward under ``torch.autocast`` -- use only where the device computes it natively
            (``sam_core.device.resolve_dtype("auto", device)`` decides).
        quantize_int8: replace the backbone/encoder/decoder ``nn.Linear`` layers by dynamically
            quantised int8 ones (CPU, float32 only). Changes results slightly; opt-in.
        text_cache_size: text-encoder outputs kept (per distinct caption); 0 disables.
        backbone_cache_size: image-backbone outputs kept (per distinct image tensor); 0 disables.

    Raises:
        ValueError: the model is not a Grounding DINO, or the dtype/quantisation request is unsupported.
    """
    core = getattr(model, "model", model)
    if not hasattr(core, "encoder") or not hasattr(core, "text_backbone"):
        kind = type(model).__name__
        raise ValueError(f"enable_dino_fast_path needs a transformers Grounding DINO, got {kind}")
    if getattr(model, _FAST_FLAG, False):
        return model
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    reduced = dtype in (torch.bfloat16, torch.float16)
    device = next(model.parameters()).device
    if quantize_int8 and (reduced or device.type != "cpu"):
        raise ValueError("quantize_int8 runs on CPU in float32 only; pass dtype=None and a CPU model")

    model.eval()
    _patch_layers(model, core.config)
    caches: dict[str, OrderedDict] = {}
    if text_cache_size > 0:
        text = core.text_backbone
        caches["text"] = OrderedDict()
        text.forward = functools.partial(
            _text_cache_forward, text, type(text).forward, caches["text"], text_cache_size
        )
    if backbone_cache_size > 0:
        vision = core.backbone
        caches["backbone"] = OrderedDict()
        vision.forward = functools.partial(
            _backbone_cache_forward, vision, type(vision).forward, caches["backbone"], backbone_cache_size
        )
    model._grounded_fast_caches = caches
    if quantize_int8:
        _quantize_linears(core)
    if reduced:
        _cast_weights(model, dtype)
        model.forward = functools.partial(_autocast_forward, type(model).forward, model, device.type, dtype)
    setattr(model, _FAST_FLAG, True)
    return model


# transformers class-name suffix -> (what replaces its computation, layers expected from the config)
_PATCHED: dict[str, tuple[str, Any]] = {
    "MultiscaleDeformableAttention": ("attn", lambda c: c.encoder_layers + c.decoder_layers),
    "BiMultiHeadAttention": ("forward", lambda c: c.encoder_layers),
    "DeformableLayer": ("forward", lambda c: c.encoder_layers),
}


def _patch_layers(model: nn.Module, config: Any) -> dict[str, int]:
    """Swap the fast computations in and count them; a count that differs from the architecture's
    layer count means transformers renamed or restructured a class: refuse, never half-patch."""
    found: dict[str, list[nn.Module]] = {suffix: [] for suffix in _PATCHED}
    for module in model.modules():
        name = type(module).__name__
        suffix = next((s for s in _PATCHED if name.endswith(s) and "GroundingDino" in name), None)
        if suffix is not None:
            found[suffix].append(module)
    counts = {suffix: len(modules) for suffix, modules in found.items()}
    expected = {suffix: rule(config) for suffix, (_, rule) in _PATCHED.items()}
    if counts != expected:
        import transformers

        raise RuntimeError(
            f"the Grounding DINO fast path expected {expected} layers of these classes in "
            f"{type(model).__name__} but found {counts} (transformers {transformers.__version__}); this "
            "transformers release renamed or restructured them. Pin transformers to the tested range in "
            "pyproject.toml, or load the detector with fast_path=False"
        )
    for module in found["MultiscaleDeformableAttention"]:
        module.attn = FastMultiScaleDeformableAttention(module.attn)
    for module in found["BiMultiHeadAttention"]:
        module.forward = types.MethodType(fused_bi_attention_forward, module)
    for module in found["DeformableLayer"]:
        module.forward = types.MethodType(chunked_deformable_layer_forward, module)
    return counts


def clear_fast_path_caches(model: nn.Module) -> None:
    """Empty the text-encoder and image-backbone caches (a no-op without the fast path)."""
    for cache in getattr(model, "_grounded_fast_caches", {}).values():
        cache.clear()


def is_fast_path_enabled(model: nn.Module) -> bool:
    """True once :func:`enable_dino_fast_path` has run on ``model``."""
    return bool(getattr(model, _FAST_FLAG, False))


def _params_version(module: nn.Module) -> tuple[int, ...]:
    """Changes when a parameter is written in place or replaced (inference tensors: replaced only)."""
    return tuple(p.data_ptr() if p.is_inference() else p._version for p in module.parameters())


def _tensor_key(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        raw = value.detach().cpu().contiguous().view(-1).view(torch.uint8)  # any dtype, incl. bf16/bool
        return (tuple(value.shape), value.dtype, str(value.device), raw.numpy().tobytes())
    return value if isinstance(value, (int, float, bool, str, type(None))) else repr(value)


def _text_cache_forward(
    module: nn.Module, forward: Any, cache: OrderedDict, size: int, *args: Any, **kwargs: Any
) -> Any:
    """The text encoder's forward, memoised per (token ids, masks, type ids, position ids, weights)."""
    if module.training or torch.is_grad_enabled():
        return forward(module, *args, **kwargs)
    key = (
        _params_version(module),
        tuple(_tensor_key(a) for a in args),
        tuple(sorted((k, _tensor_key(v)) for k, v in kwargs.items())),
    )
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    output = forward(module, *args, **kwargs)
    cache[key] = output
    while len(cache) > size:
        cache.popitem(last=False)
    return output


def _backbone_cache_forward(
    module: nn.Module,
    forward: Any,
    cache: OrderedDict,
    size: int,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor,
) -> tuple[list, list]:
    """The image backbone (Swin + position embeddings), memoised for the last ``size`` images.

    A hit needs equal pixel values, mask and weights (compared exactly). Returns fresh lists: the
    caller appends the extra levels' position embeddings to them.
    """
    if module.training or torch.is_grad_enabled():
        return forward(module, pixel_values, pixel_mask)
    version = _params_version(module)
    for key, (values, mask, output) in cache.items():
        if key[0] == version and _same(values, pixel_values) and _same(mask, pixel_mask):
            cache.move_to_end(key)
            return list(output[0]), list(output[1])
    output = forward(module, pixel_values, pixel_mask)
    cache[(version, id(output))] = (pixel_values.clone(), pixel_mask.clone(), output)
    while len(cache) > size:
        cache.popitem(last=False)
    return list(output[0]), list(output[1])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _autocast_forward(forward: Any, model: nn.Module, device_type: str, dtype: torch.dtype, *args, **kwargs):
    with torch.autocast(device_type=device_type, dtype=dtype):
        return forward(model, *args, **kwargs)


def _cast_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Linear/conv weights to ``dtype`` (autocast then skips per-call casts); norms stay float32."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.to(dtype)
    # transformers loads safetensors as views of a memory-mapped file: every tensor kept in float32
    # (norms, embeddings, biases of other layers) would hold the whole mapping -- all the float32
    # weights, resident once read -- alive. Copies in ordinary memory let it go (~700 MB for DINO-T).
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype != dtype and tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()


def _quantize_linears(core: nn.Module) -> None:
    """Dynamic int8 for the heavy linears (backbone, encoder, decoder); the fusion attention's
    projections stay float32 (the re-associated path reads their weights directly)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    for name in ("backbone", "encoder", "decoder"):
        part = getattr(core, name)
        targets = {
            child_name: per_channel_dynamic_qconfig
            for child_name, child in part.named_modules()
            if isinstance(child, nn.Linear) and ".fusion_layer." not in f".{child_name}."
        }
        with warnings.catch_warnings():
            # torch.ao dynamic quantisation is deprecated in favour of torchao; it still works in 2.x.
            warnings.simplefilter("ignore")
            quantize_dynamic(part, qconfig_spec=targets, dtype=torch.qint8, inplace=True)
