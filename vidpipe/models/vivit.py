"""ViViT, factorised encoder ("vivit_fe"): Arnab et al., "ViViT: A Video Vision Transformer" (ICCV 2021), Model 2.

- Tubelet embedding: a Conv3d with kernel = stride = (t, p, p) turns (B, 3, T, H, W) into T' = T/t
  temporal indices of N = (H/p)(W/p) tokens.
- Spatial encoder, the same weights for every temporal index: a CLS token prepended, learned position
  embeddings (N + 1), `spatial_depth` pre-norm ViT blocks, a final LayerNorm; its CLS output is that
  index's summary.
- Temporal encoder over the T' summaries: its own zero-initialised CLS, learned position embeddings
  (T' + 1), `temporal_depth` blocks, a LayerNorm. The head, zero-initialised, classifies the temporal CLS.
Spatial and temporal encoders never mix: frames within a temporal index are seen only by the tubelet.

Presets: "base" is ViViT-B/16x2 FE (768 wide, 12 heads, MLP 3072, 12 spatial + 4 temporal blocks, 32
frames at 224); "small" the DeiT-S width; "tiny" the seed study's Mini-ViViT (DeiT-Ti: 192 wide, 3 heads,
MLP 768) with 4 spatial blocks (an image model's first 4) and 4 temporal ones.

Initialisation from an image ViT (why ViViT trains at all on small data): any checkpoint whose patch
embedding is 2D (torchvision `vit_b_16`, a timm ViT/DeiT, a Hugging Face ViT) becomes the spatial
encoder. The tubelet kernel is the "central frame" inflation (zero but for the slice at t // 2, which
takes the 2D kernel; the bias copied); the CLS, position embeddings, the first `spatial_depth` blocks and
the final norm are copied; the temporal encoder and the head keep the model's own initialisation.
Numerics follow timm (LayerNorm eps 1e-6, exact GELU); the official code is JAX (scenic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.models.layers import Block, init_vit_, vit_from_hf, vit_from_torchvision
from vidpipe.models.registry import register_model
from vidpipe.models.weights import IMAGENET_MEAN, IMAGENET_STD, Layout, Transforms, Weights
from vidpipe.typed import check

PRESETS = {
    "base": dict(dim=768, heads=12, mlp_dim=3072, spatial_depth=12, temporal_depth=4, frames=32),
    "small": dict(dim=384, heads=6, mlp_dim=1536, spatial_depth=12, temporal_depth=4, frames=16),
    "tiny": dict(dim=192, heads=3, mlp_dim=768, spatial_depth=4, temporal_depth=4, frames=16),  # the seed's Mini-ViViT
}


@dataclass
class ViViTConfig:
    preset: str = "base"  # base | small | tiny: the fields below left at 0 take the preset's values
    dim: int = 0
    heads: int = 0
    mlp_dim: int = 0
    spatial_depth: int = 0
    temporal_depth: int = 0
    frames: int = 0  # the frame count temporal position embeddings are made for (others interpolate)
    tubelet: int = 2  # frames per tubelet (t)
    patch_size: int = 16
    image_size: int = 224  # the side spatial position embeddings are made for (others interpolate)
    dropout: float = 0.0  # before the classifier
    drop_path: float = 0.0  # stochastic depth, rising linearly to this over each encoder's blocks
    fused_attention: bool = True  # torch's scaled_dot_product_attention; False: explicit softmax(q k^T) v

    def __post_init__(self):
        check(self.preset in PRESETS, f"model_options.preset must be one of {', '.join(PRESETS)}; got '{self.preset}'")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) == 0:
                setattr(self, key, value)
        for key in ("dim", "heads", "mlp_dim", "spatial_depth", "temporal_depth", "frames", "tubelet", "patch_size"):
            check(getattr(self, key) >= 1, f"model_options.{key} must be at least 1; got {getattr(self, key)}")
        check(self.dim % self.heads == 0, f"model_options.dim {self.dim} must be a multiple of heads {self.heads}")
        check(self.frames % self.tubelet == 0, f"model_options.frames {self.frames} must be a multiple of tubelet {self.tubelet}")
        check(self.image_size % self.patch_size == 0, f"model_options.image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        check(0 <= self.drop_path < 1, f"model_options.drop_path must be in [0, 1); got {self.drop_path}")


class Encoder(nn.Module):
    """CLS + learned position embeddings + pre-norm blocks + LayerNorm, over a sequence of tokens."""

    def __init__(self, cfg: ViViTConfig, depth: int, length: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, length + 1, cfg.dim))
        rates = [cfg.drop_path * i / max(1, depth - 1) for i in range(depth)]  # plain floats: the model may be built on "meta"
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_dim, r, fused=cfg.fused_attention) for r in rates)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # (B, L, D), pos (1, L + 1, D) -> (B, L + 1, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ViViTFactorisedEncoder(nn.Module):
    def __init__(self, cfg: ViViTConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.dim
        grid = cfg.image_size // cfg.patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, cfg.dim, kernel_size=(cfg.tubelet, cfg.patch_size, cfg.patch_size),
                                          stride=(cfg.tubelet, cfg.patch_size, cfg.patch_size))
        self.spatial = Encoder(cfg, cfg.spatial_depth, grid * grid)
        self.temporal = Encoder(cfg, cfg.temporal_depth, cfg.frames // cfg.tubelet)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT init (trunc_normal 0.02) for linears and position embeddings; the spatial CLS
        trunc_normal too (an image model replaces it), the temporal CLS and the head zero, as scenic's."""
        init_vit_(self)
        for p in (self.spatial.pos_embed, self.spatial.cls_token, self.temporal.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def no_weight_decay(self) -> set[str]:
        return {f"{e}.{p}" for e in ("spatial", "temporal") for p in ("cls_token", "pos_embed")}

    # ------------------------------------------------------------------ position embeddings of other sizes
    @staticmethod
    def _resize_grid(pos: torch.Tensor, gh: int, gw: int) -> torch.Tensor:  # (1, 1 + n*n, D) -> (1, 1 + gh*gw, D)
        if pos.shape[1] == gh * gw + 1:
            return pos
        side = math.isqrt(pos.shape[1] - 1)
        grid = pos[:, 1:].transpose(1, 2).reshape(1, -1, side, side)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", antialias=True, align_corners=False)  # as timm resamples
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)

    @staticmethod
    def _resize_time(pos: torch.Tensor, t: int) -> torch.Tensor:  # (1, 1 + T0, D) -> (1, 1 + t, D)
        if pos.shape[1] == t + 1:
            return pos
        seq = F.interpolate(pos[:, 1:].transpose(1, 2), size=t, mode="linear", align_corners=False).transpose(1, 2)
        return torch.cat([pos[:, :1], seq], 1)

    def adapt_state(self, state: dict) -> dict:
        """A checkpoint resized or completed to this model: position embeddings of another grid or frame
        count interpolated; an image ViT (2D patch kernel, keys already in vidpipe's) made this model's
        initialisation, as the module docstring says."""
        state = dict(state)
        kernel = state.get("patch_embed.proj.weight")
        if kernel is not None and kernel.ndim == 4:  # an image model: inflate, truncate, complete
            t = self.cfg.tubelet
            inflated = torch.zeros(kernel.shape[0], kernel.shape[1], t, *kernel.shape[2:], dtype=kernel.dtype)
            inflated[:, :, t // 2] = kernel  # "central frame": only the middle frame of each tubelet contributes at init
            state["patch_embed.proj.weight"] = inflated
            depth = self.cfg.spatial_depth
            image_depth = 1 + max((int(k.split(".")[2]) for k in state if k.startswith("spatial.blocks.")), default=-1)
            if image_depth < depth:
                raise VidpipeError(f"the image model has {image_depth} blocks; this ViViT's spatial encoder needs {depth} "
                                   "(set model_options.spatial_depth to at most that)")
            state = {k: v for k, v in state.items()
                     if not (k.startswith("spatial.blocks.") and int(k.split(".")[2]) >= depth) and not k.startswith("head.")}
        for key, value in self.state_dict().items():  # the temporal encoder and head of an image init (or where a probe
            if (kernel is not None and kernel.ndim == 4 and key.startswith(("temporal.", "head."))) or (key in state and state[key].is_meta):
                state[key] = value  # left meta tensors) are this model's own initialisation
        if "spatial.pos_embed" in state and state["spatial.pos_embed"].shape[1] != self.spatial.pos_embed.shape[1]:
            side = math.isqrt(self.spatial.pos_embed.shape[1] - 1)
            state["spatial.pos_embed"] = self._resize_grid(state["spatial.pos_embed"], side, side)
        if "temporal.pos_embed" in state and state["temporal.pos_embed"].shape[1] != self.temporal.pos_embed.shape[1]:
            state["temporal.pos_embed"] = self._resize_time(state["temporal.pos_embed"], self.temporal.pos_embed.shape[1] - 1)
        return state

    def fix_input_size(self, frames: int, size: int) -> None:
        """Resize the position embeddings once for (frames, size x size) clips, so that forward interpolates
        nothing: an exported graph then holds fixed embeddings (bicubic antialiased resampling has no ONNX
        operator). Outputs for that size are unchanged; other sizes still interpolate, from these."""
        grid = size // self.cfg.patch_size
        with torch.no_grad():
            self.spatial.pos_embed = nn.Parameter(self._resize_grid(self.spatial.pos_embed, grid, grid))
            self.temporal.pos_embed = nn.Parameter(self._resize_time(self.temporal.pos_embed, frames // self.cfg.tubelet))

    # ------------------------------------------------------------------ forward
    def tubelets(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:  # (B, 3, T, H, W) -> (B, T', N, D), (H/p, W/p)
        t, p = self.cfg.tubelet, self.cfg.patch_size
        if x.shape[2] % t or x.shape[3] % p or x.shape[4] % p:
            raise VidpipeError(f"vivit_fe takes clips of a multiple of {t} frames and sides that are multiples of {p}; "
                               f"got {tuple(x.shape[2:])} (set data.frames / data.crop_size to fit)")
        x = self.patch_embed.proj(x)  # (B, D, T', H/p, W/p)
        return x.flatten(3).permute(0, 2, 3, 1), tuple(x.shape[-2:])

    def spatial_cls(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, T', D): each temporal index's summary
        tokens, grid = self.tubelets(x)
        b, tt, n, d = tokens.shape
        y = self.spatial(tokens.reshape(b * tt, n, d), self._resize_grid(self.spatial.pos_embed, *grid))  # (B*T', 1 + N, D)
        return y[:, 0].reshape(b, tt, d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 1 + T', D)
        cls = self.spatial_cls(x)
        return self.temporal(cls, self._resize_time(self.temporal.pos_embed, cls.shape[1]))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x[:, 0])  # the temporal CLS, (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, classes)
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------ checkpoint layouts: image ViTs -> the spatial encoder
def _spatial(vit: dict) -> dict:
    """An image ViT in timm's keys -> vidpipe ViViT keys (2D patch kernel; adapt_state inflates it)."""
    out = {}
    for key, value in vit.items():
        if key in ("cls_token", "pos_embed"):
            out[f"spatial.{key}"] = value
        elif key.startswith(("blocks.", "norm.")):
            out[f"spatial.{key}"] = value
        elif key.startswith(("patch_embed.", "head.")):
            out[key] = value
        elif key in ("dist_token", "head_dist.weight", "head_dist.bias"):
            raise ValueError(f"{key}: a distilled DeiT (two tokens); use the plain deit_*_patch16_224 weights")
        else:
            raise ValueError(f"unknown key {key}")
    return out


def from_timm(state: dict) -> dict:
    if "cls_token" not in state or "blocks.0.attn.qkv.weight" not in state:
        raise ValueError("no cls_token / blocks.0.attn.qkv.weight")
    return _spatial(state)


TIMM_VIT = Layout("timm-vit", from_timm, "a timm ViT / DeiT state dict (patch_embed.proj, cls_token, pos_embed, blocks.i.*, norm, head)")
TORCHVISION_VIT = Layout("torchvision-vit", lambda s: _spatial(vit_from_torchvision(s)),
                         "a torchvision VisionTransformer state dict (conv_proj, class_token, encoder.layers.encoder_layer_i.*)")
HF_VIT = Layout("hf-vit", lambda s: _spatial(vit_from_hf(s)),
                "a Hugging Face ViTModel / ViTForImageClassification folder or state dict ([vit.]embeddings.*, encoder.layer.i.*)")


_IMAGE = Transforms("tsn", frames=16, short_side=224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
IMAGENET1K_V1 = Weights(
    tag="IMAGENET1K_V1",
    source="torchvision:ViT_B_16_Weights.IMAGENET1K_V1",
    layout=TORCHVISION_VIT,
    transforms=_IMAGE,
    num_classes=1000,
    meta={"dataset": "ImageNet-1k (image model: the spatial encoder of the base preset)", "top1": 81.072,
          "protocol": "torchvision's ImageNet-1k val, the image model", "params": 86_567_656},
)
VIT_B16_HF = Weights(
    tag="VIT_B16_IN21K_HF",
    source="hf:google/vit-base-patch16-224",
    layout=HF_VIT,
    transforms=Transforms("tsn", frames=16, short_side=224, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    num_classes=1000,
    meta={"dataset": "ImageNet-21k, fine-tuned on ImageNet-1k (the seed's ViViT spatial init; base preset)", "params": 86_567_656},
)
DEIT_TINY = Weights(
    tag="DEIT_TINY_IN1K",
    source="hf:timm/deit_tiny_patch16_224.fb_in1k",
    layout=TIMM_VIT,
    transforms=_IMAGE,
    num_classes=1000,
    meta={"dataset": "ImageNet-1k (DeiT-Tiny: the seed's Mini-ViViT spatial init; tiny preset)", "top1": 72.2,
          "protocol": "the DeiT paper, ImageNet-1k val, the image model", "params": 5_717_416},
)
SCRATCH_TRANSFORMS = Transforms("tsn", frames=16, short_side=128, crop=112)  # vidpipe's stores; position embeddings interpolate


@register_model("vivit_fe", ViViTConfig, "clips", "ViViT factorised encoder (Model 2): spatial ViT per tubelet index, temporal ViT over them",
                transforms=SCRATCH_TRANSFORMS, weights=(IMAGENET1K_V1, VIT_B16_HF, DEIT_TINY), layouts=(TIMM_VIT, TORCHVISION_VIT, HF_VIT))
def vivit_fe(cfg: ViViTConfig, *, num_classes: int, in_dim: None = None) -> ViViTFactorisedEncoder:
    return ViViTFactorisedEncoder(cfg, num_classes)
