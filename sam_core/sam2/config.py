"""SAM 2 image-model configuration: one frozen dataclass and the presets Meta released.

The four sizes (tiny, small, base+, large) differ only in the Hiera trunk: width, heads, blocks per
stage, which blocks attend globally, window sizes and the background size of the position embedding.
SAM 2.0 and 2.1 share the image path (2.1 changed training and the video memory modules), so each
size serves both releases. Sizes follow Meta's ``sam2/configs/sam2.1/sam2.1_hiera_*.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["Sam2Config", "SAM2_CONFIGS", "SAM2_ARCHITECTURE_FIELDS"]

# ImageNet statistics of pixels scaled to 0..1 (SAM 2 divides by 255 first, then normalises).
_PIXEL_MEAN = (0.485, 0.456, 0.406)
_PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Sam2Config:
    """Every size of a SAM 2 image model; presets in ``SAM2_CONFIGS``.

    Images are resized (without keeping the aspect ratio) to ``image_size`` squared. The trunk embeds
    4 x 4 patches and halves the grid at each of its later stages (strides 4, 8, 16, 32); the neck
    maps the strides 4, 8 and 16 to ``prompt_embed_dim`` channels. The decoder reads the stride-16
    grid (64 x 64 at 1024) and upsamples 4x with skip connections from strides 8 and 4, so low-res
    mask logits are 256 x 256 at 1024.
    """

    # --- Hiera trunk: the only part that differs between the sizes
    embed_dim: int  # width of stage 1; doubles at each later stage (96 / 96 / 112 / 144)
    num_heads: int  # heads of stage 1; doubles at each later stage
    stages: tuple[int, int, int, int]  # blocks per stage
    global_att_blocks: tuple[int, ...]  # blocks (global index) attending over the whole grid
    window_pos_embed_bkg_spatial_size: tuple[int, int]  # learnt background position grid (interpolated)
    # Windowed attention size (tokens) per stage; a stage's first block keeps the previous stage's
    # window, as it still sees the previous (finer) grid before its pooled query.
    window_spec: tuple[int, int, int, int] = (8, 4, 14, 7)
    image_size: int = 1024
    mlp_ratio: float = 4.0
    # --- prompt encoder / mask decoder: as SAM 1, plus object score and high-resolution skips
    prompt_embed_dim: int = 256  # also the neck's width
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # Single-mask output: when token 0's mask is unstable (its area changes by more than 1 - thresh
    # between logit thresholds +-delta), return the best of the multimask outputs instead (Meta's
    # build_sam2 default for images: on, 0.05, 0.98).
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # --- pixel normalisation (0..1 pixels) and the logit threshold that makes a binary mask
    pixel_mean: tuple[float, float, float] = field(default=_PIXEL_MEAN)
    pixel_std: tuple[float, float, float] = field(default=_PIXEL_STD)
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        for name in ("stages", "global_att_blocks", "window_pos_embed_bkg_spatial_size", "window_spec"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        problems = _problems(self)
        if problems:
            raise ValueError("invalid Sam2Config: " + "; ".join(problems))

    @property
    def image_embedding_size(self) -> int:
        """Side of the stride-16 grid the decoder reads (64 at 1024)."""
        return self.image_size // 16

    @property
    def mask_input_size(self) -> int:
        """Side of the low-res mask logits and of the dense mask prompt (256 at 1024)."""
        return 4 * self.image_embedding_size

    @property
    def stage_dims(self) -> tuple[int, int, int, int]:
        """Trunk width per stage (stride 4, 8, 16, 32)."""
        return tuple(self.embed_dim * 2**i for i in range(4))  # type: ignore[return-value]

    def architecture(self) -> dict[str, object]:
        """The fields that decide the weights' meaning."""
        values = asdict(self)
        return {name: values[name] for name in SAM2_ARCHITECTURE_FIELDS}


SAM2_ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "embed_dim",
    "num_heads",
    "stages",
    "global_att_blocks",
    "window_pos_embed_bkg_spatial_size",
    "window_spec",
    "image_size",
    "mlp_ratio",
    "prompt_embed_dim",
    "mask_in_chans",
    "decoder_depth",
    "decoder_num_heads",
    "decoder_mlp_dim",
    "num_multimask_outputs",
    "iou_head_depth",
    "iou_head_hidden_dim",
)


def _problems(c: Sam2Config) -> list[str]:
    out = []
    if len(c.stages) != 4 or min(c.stages) < 1:
        out.append(f"stages must be 4 positive block counts, got {c.stages}")
    if len(c.window_spec) != 4 or min(c.window_spec) < 1:
        out.append(f"window_spec must be 4 positive window sizes, got {c.window_spec}")
    odd = [w for w in c.window_spec[:3] if w % 2]
    if odd:
        out.append(f"window_spec {c.window_spec}: the first 3 windows must be even (queries pool 2 x 2)")
    depth = sum(c.stages)
    bad = [i for i in c.global_att_blocks if not 0 <= i < depth]
    if bad:
        out.append(f"global_att_blocks {bad} outside the {depth} blocks")
    if c.image_size % 32:
        out.append(f"image_size {c.image_size} must be a multiple of 32 (four stages after a stride-4 stem)")
    elif (c.image_size // 4) % c.window_spec[0]:
        out.append(
            f"the stride-4 grid ({c.image_size // 4}) must be a multiple of window_spec[0] "
            f"({c.window_spec[0]}): the window position embedding is tiled over it"
        )
    if c.prompt_embed_dim % 8 or c.prompt_embed_dim % (2 * c.decoder_num_heads):
        out.append(
            f"prompt_embed_dim {c.prompt_embed_dim} must be divisible by 8 and by 2 * decoder_num_heads"
        )
    for i, dim in enumerate(c.stage_dims):
        if dim % (c.num_heads * 2**i):
            out.append(f"stage {i + 1} width {dim} not divisible by its {c.num_heads * 2**i} heads")
    return out


_TINY = Sam2Config(
    embed_dim=96,
    num_heads=1,
    stages=(1, 2, 7, 2),
    global_att_blocks=(5, 7, 9),
    window_pos_embed_bkg_spatial_size=(7, 7),
)
_SMALL = Sam2Config(
    embed_dim=96,
    num_heads=1,
    stages=(1, 2, 11, 2),
    global_att_blocks=(7, 10, 13),
    window_pos_embed_bkg_spatial_size=(7, 7),
)
_BASE_PLUS = Sam2Config(
    embed_dim=112,
    num_heads=2,
    stages=(2, 3, 16, 3),
    global_att_blocks=(12, 16, 20),
    window_pos_embed_bkg_spatial_size=(14, 14),
)
_LARGE = Sam2Config(
    embed_dim=144,
    num_heads=2,
    stages=(2, 6, 36, 4),
    global_att_blocks=(23, 33, 43),
    window_pos_embed_bkg_spatial_size=(7, 7),
    window_spec=(8, 4, 16, 8),
)

SAM2_CONFIGS: dict[str, Sam2Config] = {
    "sam2.1_hiera_tiny": _TINY,
    "sam2.1_hiera_small": _SMALL,
    "sam2.1_hiera_base_plus": _BASE_PLUS,
    "sam2.1_hiera_large": _LARGE,
    "sam2_hiera_tiny": _TINY,
    "sam2_hiera_small": _SMALL,
    "sam2_hiera_base_plus": _BASE_PLUS,
    "sam2_hiera_large": _LARGE,
    # For tests: 128 x 128 input -> grids 32 / 16 / 8 / 4; window 6 pads the 8 x 8 grid to 12 x 12
    # (and, pooled, window 3 pads 4 x 4 to 6 x 6 in the first stride-32 block).
    "sam2_test": Sam2Config(
        embed_dim=16,
        num_heads=1,
        stages=(1, 2, 3, 1),
        global_att_blocks=(4,),
        window_pos_embed_bkg_spatial_size=(3, 3),
        window_spec=(4, 2, 6, 2),
        image_size=128,
        prompt_embed_dim=64,
        decoder_num_heads=4,
        decoder_mlp_dim=128,
        iou_head_hidden_dim=64,
    ),
}
