"""SAM architecture configuration: one frozen dataclass and the presets Meta released.

The three released models differ in four numbers (encoder width, depth, heads and which blocks use
global attention); everything else -- prompt encoder, mask decoder, pre/post-processing -- is shared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

__all__ = ["SamConfig", "SAM_CONFIGS", "ARCHITECTURE_FIELDS", "TinyViTConfig"]

# ImageNet statistics in 0..255 pixel units, as Meta's Sam(pixel_mean=..., pixel_std=...).
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT image encoder: a conv stage then three windowed-attention stages.

    Stage 0 is MBConv blocks; stages 1-3 are attention blocks with learnt per-offset biases. After
    each stage but the last a patch merge changes the width to the next stage's and downsamples by
    ``merge_strides`` (TinyViT-5M for SAM keeps 64 x 64 for its last stage: 4 x 2 x 2 = 16).
    """

    embed_dims: tuple[int, int, int, int] = (64, 128, 160, 320)
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    num_heads: tuple[int, int, int, int] = (2, 4, 5, 10)  # stage 0 (conv) ignores its entry
    window_sizes: tuple[int, int, int, int] = (7, 7, 14, 7)
    merge_strides: tuple[int, int, int] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3  # depthwise conv between attention and MLP in each block

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "num_heads", "window_sizes", "merge_strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        bad = [f"{d} % {h}" for d, h in zip(self.embed_dims[1:], self.num_heads[1:], strict=True) if d % h]
        if bad or len(self.embed_dims) != 4 or len(self.merge_strides) != 3:
            raise ValueError(f"invalid TinyViTConfig: 4 stages, widths divisible by heads ({bad})")

    @property
    def stride(self) -> int:
        """Input pixels per output token: 4 (the conv stem) times the merge strides."""
        out = 4
        for s in self.merge_strides:
            out *= s
        return out


@dataclass(frozen=True)
class SamConfig:
    """Every size of a Segment Anything model; presets in ``SAM_CONFIGS``.

    All pre/post-processing derives from ``image_size``: images are resized so their longest side is
    ``image_size`` and padded to a square; the embedding grid is ``image_size // patch_size``; low-res
    mask logits and the dense mask prompt are ``4 *`` that grid (256 x 256 for the released models).
    """

    # --- image encoder (ViT): the only part that differs between vit_b / vit_l / vit_h
    encoder_embed_dim: int  # ViT width; dominates cost (768 / 1024 / 1280)
    encoder_depth: int  # number of transformer blocks
    encoder_num_heads: int  # attention heads per block (head dim = embed_dim // heads)
    # Blocks that attend over the whole grid; all others attend inside window_size^2 windows, which
    # keeps the cost linear in image area except at these few blocks.
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024  # side of the padded square the encoder sees
    patch_size: int = 16  # one token per patch_size^2 pixels -> 64 x 64 tokens at 1024
    window_size: int = 14  # local attention window (in tokens); the grid is padded to a multiple
    mlp_ratio: float = 4.0  # ViT MLP hidden width = mlp_ratio * encoder_embed_dim
    # --- prompt encoder / mask decoder: the same in all released models
    prompt_embed_dim: int = 256  # width of image embedding, prompt tokens and decoder
    mask_in_chans: int = 16  # hidden channels of the dense (mask prompt) downscaler
    decoder_depth: int = 2  # two-way transformer blocks
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3  # masks returned for an ambiguous prompt (plus 1 single-mask token)
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # --- pixel normalisation and the logit threshold that makes a binary mask
    pixel_mean: tuple[float, float, float] = field(default=_PIXEL_MEAN)
    pixel_std: tuple[float, float, float] = field(default=_PIXEL_STD)
    mask_threshold: float = 0.0
    # --- variants: MobileSAM's TinyViT encoder (the encoder_* fields above are then unused) and
    # SAM-HQ's decoder (HQ output token + early-feature fusion, ``hq_decoder.py``)
    tiny_vit: TinyViTConfig | None = None
    hq: bool = False

    def __post_init__(self) -> None:
        # YAML/JSON give lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "encoder_global_attn_indexes", tuple(self.encoder_global_attn_indexes))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        if isinstance(self.tiny_vit, dict):  # from YAML/JSON
            object.__setattr__(self, "tiny_vit", TinyViTConfig(**self.tiny_vit))
        problems = _problems(self)
        if problems:
            raise ValueError("invalid SamConfig: " + "; ".join(problems))

    @property
    def image_embedding_size(self) -> int:
        """Side of the square image-embedding grid (64 for the released models)."""
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """Side of the low-res mask logits and of the dense mask prompt (256 for the released models)."""
        return 4 * self.image_embedding_size

    @property
    def early_feature_dim(self) -> int:
        """Channels of the encoder's early features that SAM-HQ fuses (ViT width, or TinyViT stage 2)."""
        return self.tiny_vit.embed_dims[2] if self.tiny_vit is not None else self.encoder_embed_dim

    def architecture(self) -> dict[str, object]:
        """The fields that decide the weights' meaning (everything except pixel stats and threshold)."""
        values = asdict(self)
        return {name: values[name] for name in ARCHITECTURE_FIELDS}


ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "encoder_embed_dim",
    "encoder_depth",
    "encoder_num_heads",
    "encoder_global_attn_indexes",
    "image_size",
    "patch_size",
    "window_size",
    "mlp_ratio",
    "prompt_embed_dim",
    "mask_in_chans",
    "decoder_depth",
    "decoder_num_heads",
    "decoder_mlp_dim",
    "num_multimask_outputs",
    "iou_head_depth",
    "iou_head_hidden_dim",
    "tiny_vit",
    "hq",
)


def _problems(c: SamConfig) -> list[str]:
    out: list[str] = []
    if c.tiny_vit is not None and c.image_size // c.tiny_vit.stride != c.image_size // c.patch_size:
        out.append(
            f"TinyViT downsamples by {c.tiny_vit.stride} but the embedding grid needs patch_size "
            f"{c.patch_size}"
        )
    positive = (
        "encoder_embed_dim",
        "encoder_depth",
        "encoder_num_heads",
        "image_size",
        "patch_size",
        "prompt_embed_dim",
        "mask_in_chans",
        "decoder_depth",
        "decoder_num_heads",
        "decoder_mlp_dim",
        "num_multimask_outputs",
        "iou_head_depth",
        "iou_head_hidden_dim",
    )
    out += [
        f"{name} must be a positive int, got {getattr(c, name)!r}"
        for name in positive
        if not isinstance(getattr(c, name), int) or getattr(c, name) <= 0
    ]
    if out:
        return out
    if c.window_size < 0:
        out.append(f"window_size must be >= 0 (0 = global attention everywhere), got {c.window_size}")
    if c.mlp_ratio <= 0 or (c.encoder_embed_dim * c.mlp_ratio) % 1:
        out.append(f"mlp_ratio * encoder_embed_dim must be a positive whole number, got {c.mlp_ratio}")
    if c.image_size % c.patch_size:
        out.append(f"image_size {c.image_size} must be a multiple of patch_size {c.patch_size}")
    if c.encoder_embed_dim % c.encoder_num_heads:
        out.append(
            f"encoder_embed_dim {c.encoder_embed_dim} must divide by encoder_num_heads {c.encoder_num_heads}"
        )
    bad = [i for i in c.encoder_global_attn_indexes if not 0 <= i < c.encoder_depth]
    if bad:
        out.append(f"encoder_global_attn_indexes {bad} are outside 0..{c.encoder_depth - 1}")
    if c.prompt_embed_dim % 8:
        # the decoder upscales to prompt_embed_dim // 8 channels; the Fourier encoding uses dim // 2
        out.append(f"prompt_embed_dim must be a multiple of 8, got {c.prompt_embed_dim}")
    # cross-attention runs at half width (Meta's attention_downsample_rate = 2)
    if (c.prompt_embed_dim // 2) % c.decoder_num_heads:
        out.append(
            f"prompt_embed_dim // 2 = {c.prompt_embed_dim // 2} must divide by decoder_num_heads "
            f"{c.decoder_num_heads}"
        )
    if c.mask_in_chans % 4:
        out.append(f"mask_in_chans must be a multiple of 4, got {c.mask_in_chans}")
    if len(c.pixel_mean) != 3 or len(c.pixel_std) != 3 or min(c.pixel_std) <= 0:
        out.append("pixel_mean and pixel_std need 3 values each, pixel_std > 0")
    return out


def _tiny_vit_sam() -> SamConfig:
    # the encoder_* numbers describe no ViT here (tiny_vit replaces it); TinyViT-5M's last stage
    return SamConfig(
        encoder_embed_dim=320,
        encoder_depth=12,
        encoder_num_heads=10,
        encoder_global_attn_indexes=(),
        tiny_vit=TinyViTConfig(),
    )


SAM_CONFIGS: dict[str, SamConfig] = {
    # Meta's build_sam_vit_b / _vit_l / _vit_h (segment_anything/build_sam.py).
    "vit_b": SamConfig(
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
    ),
    "vit_l": SamConfig(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamConfig(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    # Untrained tests / offline smoke runs: 8 x 8 token grid, 2 windowed-then-global blocks, 32 x 32
    # low-res masks. Same code paths as the real models, ~0.1 M parameters.
    "tiny": SamConfig(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        image_size=128,
        window_size=4,
        prompt_embed_dim=32,
        decoder_num_heads=2,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
    ),
}
SAM_CONFIGS.update(
    {
        # MobileSAM (ChaoningZhang/MobileSAM build_sam_vit_t): TinyViT-5M + SAM's prompt encoder/decoder.
        "vit_t": _tiny_vit_sam(),
        # SAM-HQ (SysCV/sam-hq build_sam*.py): SAM's encoders + the HQ decoder fed by early features.
        "hq_vit_b": replace(SAM_CONFIGS["vit_b"], hq=True),
        "hq_vit_l": replace(SAM_CONFIGS["vit_l"], hq=True),
        "hq_vit_h": replace(SAM_CONFIGS["vit_h"], hq=True),
        "hq_vit_tiny": replace(_tiny_vit_sam(), hq=True),
    }
)
