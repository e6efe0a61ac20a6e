"""TimeSformer with divided space-time attention ("timesformer").

Bertasius et al., "Is Space-Time Attention All You Need for Video Understanding?" (ICML 2021).
A ViT applied to every frame's 16 x 16 patches, each block first attending over time (each patch
position across the T frames, the CLS token left out), then over space (each frame's patches plus a
copy of the video CLS; the T copies' outputs are averaged back into one), then an MLP. Pre-norm,
LayerNorm eps 1e-6, classifier on the final CLS. Computed as Hugging Face transformers'
`TimesformerForVideoClassification` computes it (tested against it, logits to 1e-5).

Tokens: (B, 1 + N*T, D), the CLS then patch-major, frame-minor (token 1 + n*T + t), as in HF.
Inputs of another size or frame count than the checkpoint's resize the position embeddings (over the
patch grid) and the time embeddings (over T) by nearest-neighbour interpolation, as HF does.
`attention="space_only"` is the paper's frame-level baseline: the same ViT per frame, no temporal
attention, token outputs averaged over frames before the final norm (as the original code does).

Weights: a Hugging Face checkpoint folder (config.json gives the architecture), the original
facebookresearch layout (`model.blocks.i.*`), vidpipe's own, or an ImageNet ViT from torchvision
(`vit_b_16`) as the paper initialises it: spatial parts copied, temporal attention copied from the
spatial attention, time embeddings zero, `temporal_fc` zero in every block but the first (random, as
the original code leaves it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.models.layers import Attention, Mlp, drop_path, init_vit_, vit_from_torchvision
from vidpipe.models.registry import register_model
from vidpipe.models.weights import IMAGENET_MEAN, IMAGENET_STD, Layout, Transforms, Weights
from vidpipe.typed import check, check_layers

PRESETS = {  # ViT-B/16, DeiT-S and DeiT-Ti widths; heads of 64 channels
    "base": dict(dim=768, depth=12, heads=12, mlp_dim=3072),
    "small": dict(dim=384, depth=12, heads=6, mlp_dim=1536),
    "tiny": dict(dim=192, depth=12, heads=3, mlp_dim=768),
}
ATTENTION = ("divided", "space_only")


@dataclass
class TimeSformerConfig:
    preset: str = "base"  # base | small | tiny: dim, depth, heads and mlp_dim unless given
    dim: int = 0  # 0: the preset's
    depth: int = 0
    heads: int = 0
    mlp_dim: int = 0
    patch_size: int = 16
    image_size: int = 224  # the side position embeddings are made for (other sizes interpolate)
    frames: int = 8  # the frame count time embeddings are made for (other counts interpolate)
    attention: str = "divided"  # divided | space_only
    qkv_bias: bool = True
    fused_attention: bool = True  # torch's scaled_dot_product_attention; False: explicit softmax(q k^T) v, as HF computes it
    dropout: float = 0.0  # before the classifier
    drop_path: float = 0.0  # stochastic depth, rising linearly to this in the last block

    def __post_init__(self):
        check(self.preset in PRESETS, f"model_options.preset must be one of {', '.join(PRESETS)}; got '{self.preset}'")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) == 0:
                setattr(self, key, value)
        check_layers(self)
        check(self.attention in ATTENTION, f"model_options.attention must be one of {', '.join(ATTENTION)}; got '{self.attention}'")
        check(self.mlp_dim >= 1 and self.patch_size >= 1 and self.frames >= 1, "model_options.mlp_dim, patch_size and frames must be at least 1")
        check(self.image_size % self.patch_size == 0, f"model_options.image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        check(0 <= self.drop_path < 1, f"model_options.drop_path must be in [0, 1); got {self.drop_path}")


class Block(nn.Module):
    def __init__(self, cfg: TimeSformerConfig, drop_path_rate: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias, cfg.fused_attention)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = Mlp(cfg.dim, cfg.mlp_dim)
        self.divided = cfg.attention == "divided"
        if self.divided:
            self.temporal_norm1 = nn.LayerNorm(cfg.dim, eps=1e-6)
            self.temporal_attn = self.make_temporal_mixer(cfg)
            self.temporal_fc = nn.Linear(cfg.dim, cfg.dim)
        self.drop_path = drop_path_rate

    def make_temporal_mixer(self, cfg: TimeSformerConfig) -> nn.Module:
        """What mixes each patch position over time: softmax attention here (a subclass may swap it)."""
        return Attention(cfg.dim, cfg.heads, cfg.qkv_bias, cfg.fused_attention)

    def mix_time(self, x: torch.Tensor) -> torch.Tensor:  # (B*N, T, D) -> (B*N, T, D)
        return self.temporal_attn(x)

    per_frame_cls = False  # True: one CLS token per frame (a causal variant), else one for the video

    def time_update(self, patches: torch.Tensor, t: int) -> torch.Tensor:  # (B, N*T, D) patch-major -> the temporal residual
        b, nt, d = patches.shape
        mixed = drop_path(self.mix_time(self.temporal_norm1(patches.reshape(b * (nt // t), t, d))), self.drop_path, self.training)
        return self.temporal_fc(mixed.reshape(b, nt, d))

    def video_cls(self, cls_per_frame: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, 1, D)
        return cls_per_frame.mean(1, keepdim=True)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:  # (B, C + N*T, D) -> same; C = 1 (or T, per_frame_cls)
        if not self.divided:  # space_only: x is (B*T, 1 + N, D), one frame per row
            x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
            return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        c = t if self.per_frame_cls else 1
        cls, patches = x[:, :c], x[:, c:]  # (B, C, D), (B, N*T, D)
        b, nt, d = patches.shape
        n = nt // t
        # time: each patch position over the T frames, the CLS left out
        patches = patches + self.time_update(patches, t)
        # space: each frame's N patches with its copy of the CLS; the copies' outputs pooled back by video_cls
        frames = patches.reshape(b, n, t, d).transpose(1, 2).reshape(b * t, n, d)
        s = self.attn(self.norm1(torch.cat([cls.expand(b, t, d).reshape(b * t, 1, d), frames], 1)))
        s = drop_path(s, self.drop_path, self.training)  # (B*T, 1 + N, D)
        cls_out = self.video_cls(s[:, 0].reshape(b, t, d))  # (B, C, D)
        s_patches = s[:, 1:].reshape(b, t, n, d).transpose(1, 2).reshape(b, nt, d)
        x = torch.cat([cls, patches], 1) + torch.cat([cls_out, s_patches], 1)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: TimeSformerConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B*T, 3, H, W) -> (B*T, D, H/p, W/p)
        return self.proj(x)


class TimeSformer(nn.Module):
    block = Block

    def __init__(self, cfg: TimeSformerConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.dim
        grid = cfg.image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.dim))
        if cfg.attention == "divided":
            self.time_embed = nn.Parameter(torch.zeros(1, cfg.frames, cfg.dim))  # zero, as HF and the original leave it
        rates = [cfg.drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]  # no tensor: the model may be built on "meta"
        self.blocks = nn.ModuleList(self.block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """As the original: trunc_normal(0.02) linears with zero biases, unit LayerNorms; temporal_fc zero
        in every block but the first."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_vit_(self)
        for block in list(self.blocks)[1:]:
            if hasattr(block, "temporal_fc"):
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed", "time_embed"}

    def adapt_state(self, state: dict) -> dict:
        """A checkpoint made for another frame count or image size, resized to this model's: time and
        position embeddings by the nearest-neighbour interpolation the forward uses."""
        state = dict(state)
        if "time_embed" in state and hasattr(self, "time_embed") and state["time_embed"].shape != self.time_embed.shape:
            t = self.time_embed.shape[1]
            state["time_embed"] = F.interpolate(state["time_embed"].transpose(1, 2), size=t, mode="nearest").transpose(1, 2)
        if "pos_embed" in state and state["pos_embed"].shape != self.pos_embed.shape and state["pos_embed"].shape[-1] == self.pos_embed.shape[-1]:
            side = math.isqrt(self.pos_embed.shape[1] - 1)
            pos = state["pos_embed"]
            old = math.isqrt(pos.shape[1] - 1)
            grid = F.interpolate(pos[:, 1:].transpose(1, 2).reshape(1, -1, old, old), size=(side, side), mode="nearest")
            state["pos_embed"] = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
        return state

    def fix_input_size(self, frames: int, size: int) -> None:
        """Resize the position and time embeddings once for (frames, size x size) clips, so that forward
        interpolates nothing: an exported graph then holds fixed embeddings (ONNX's nearest resize does
        not pick PyTorch's indices at every size). Outputs for that size are unchanged."""
        grid = size // self.cfg.patch_size
        with torch.no_grad():
            self.pos_embed = nn.Parameter(self._pos_embed(grid, grid).clone())
            if hasattr(self, "time_embed"):  # divided attention (space_only and the hybrid have none)
                self.time_embed = nn.Parameter(self._time_embed(frames).clone())

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:  # (1, 1 + gh*gw, D)
        pos = self.pos_embed
        if pos.shape[1] == gh * gw + 1:
            return pos
        side = math.isqrt(pos.shape[1] - 1)
        grid = pos[:, 1:].transpose(1, 2).reshape(1, -1, side, side)
        grid = F.interpolate(grid, size=(gh, gw), mode="nearest").flatten(2).transpose(1, 2)
        return torch.cat([pos[:, :1], grid], 1)

    def _time_embed(self, t: int) -> torch.Tensor:  # (1, T, D)
        if self.time_embed.shape[1] == t:
            return self.time_embed
        return F.interpolate(self.time_embed.transpose(1, 2), size=t, mode="nearest").transpose(1, 2)

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:  # (B*T, 3, H, W) -> (B*T, 1 + N, D)
        """Each frame's patches with a CLS in front and position embeddings added."""
        x = self.patch_embed(frames)  # (B*T, D, H/p, W/p)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B*T, N, D)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self._pos_embed(gh, gw)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, 3, T, H, W) -> (tokens, T): (B, 1 + N*T, D) divided, (B*T, 1 + N, D) space_only."""
        b, _, t, h, w = x.shape
        x = self.frame_tokens(x.transpose(1, 2).reshape(b * t, 3, h, w))  # (B*T, 1 + N, D)
        if self.cfg.attention == "space_only":
            return x, t
        n, d = x.shape[1] - 1, x.shape[2]
        cls = x[::t, :1]  # frame 0's CLS (every frame's is the same)
        patches = x[:, 1:].reshape(b, t, n, d).transpose(1, 2)  # (B, N, T, D)
        if hasattr(self, "time_embed"):
            patches = patches + self._time_embed(t)[:, None]
        return torch.cat([cls, patches.reshape(b, n * t, d)], 1), t

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 1 + N*T, D); (B, 1 + N, D) space_only
        b = x.shape[0]
        x, t = self.embed(x)
        for block in self.blocks:
            x = block(x, t)
        if self.cfg.attention == "space_only":
            x = x.reshape(b, t, *x.shape[1:]).mean(1)  # average the frames' tokens
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x[:, 0])  # the CLS, (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------ checkpoint layouts
_HF_BLOCK = {  # Hugging Face TimesformerLayer -> vidpipe Block (the original code's names)
    "temporal_layernorm": "temporal_norm1", "temporal_attention.attention.qkv": "temporal_attn.qkv",
    "temporal_attention.output.dense": "temporal_attn.proj", "temporal_dense": "temporal_fc",
    "layernorm_before": "norm1", "attention.attention.qkv": "attn.qkv", "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
}
_HF_TOP = {"timesformer.embeddings.cls_token": "cls_token", "timesformer.embeddings.position_embeddings": "pos_embed",
           "timesformer.embeddings.time_embeddings": "time_embed", "timesformer.embeddings.patch_embeddings.projection": "patch_embed.proj",
           "timesformer.layernorm": "norm", "classifier": "head"}


def from_hf(state: dict) -> dict:
    """TimesformerForVideoClassification keys -> vidpipe's."""
    if "timesformer.embeddings.cls_token" not in state:
        raise ValueError("no timesformer.embeddings.cls_token")
    out = {}
    for key, value in state.items():
        m = re.match(r"timesformer\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m and m.group(2) in _HF_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}.{m.group(3)}"] = value
            continue
        base, _, leaf = key.rpartition(".") if key.endswith((".weight", ".bias")) else (key, "", "")
        if base not in _HF_TOP:
            raise ValueError(f"unknown key {key}")
        out[_HF_TOP[base] + (f".{leaf}" if leaf else "")] = value
    return out


def hf_options(state: dict, meta: dict) -> dict:
    """Model options from a Hugging Face folder's config.json (its tensors are not needed)."""
    c = meta.get("hf_config")
    if c is None:
        raise ValueError("no config.json beside the weights")
    check(abs(c.get("layer_norm_eps", 1e-6) - 1e-6) < 1e-12, f"config.json layer_norm_eps {c.get('layer_norm_eps')}: vidpipe's TimeSformer uses 1e-6")
    check(c.get("hidden_act", "gelu") == "gelu", f"config.json hidden_act {c.get('hidden_act')}: vidpipe's TimeSformer uses gelu")
    attention = {"divided_space_time": "divided", "space_only": "space_only"}.get(c.get("attention_type", "divided_space_time"))
    check(attention is not None, f"config.json attention_type {c.get('attention_type')}: vidpipe supports divided_space_time and space_only")
    return dict(dim=c["hidden_size"], depth=c["num_hidden_layers"], heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                patch_size=c["patch_size"], image_size=c["image_size"], frames=c["num_frames"], attention=attention,
                qkv_bias=c.get("qkv_bias", True))


def from_official(state: dict) -> dict:
    """facebookresearch/TimeSformer checkpoints (`model.` prefix, the same names as vidpipe's)."""
    if "model.cls_token" not in state:
        raise ValueError("no model.cls_token")
    return {k.removeprefix("model."): v for k, v in state.items()}


def shape_options(state: dict, meta: dict) -> dict:
    """Model options read from tensor shapes (checkpoints without a config): heads of 64 channels."""
    dim = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    options = dict(dim=dim, depth=depth, heads=max(1, dim // 64), mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
                   patch_size=patch, image_size=grid * patch, attention="divided" if "time_embed" in state else "space_only")
    if "time_embed" in state:
        options["frames"] = state["time_embed"].shape[1]
    return options


def from_torchvision_vit(state: dict) -> dict:
    """torchvision `vit_b_16`-style keys -> a divided TimeSformer initialised as the paper does it: spatial
    parts copied, temporal attention and its norm copied from the spatial ones, time embeddings zero,
    temporal_fc zero but in block 0 (trunc_normal 0.02 from a fixed seed: the original leaves it random)."""
    out = vit_from_torchvision(state)
    dim = out["cls_token"].shape[-1]
    for i in sorted({int(k.split(".")[1]) for k in out if k.startswith("blocks.")}):
        b = f"blocks.{i}."
        for leaf in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias"):
            out[f"{b}temporal_attn.{leaf}"] = out[f"{b}attn.{leaf}"]
        out[f"{b}temporal_norm1.weight"], out[f"{b}temporal_norm1.bias"] = out[f"{b}norm1.weight"], out[f"{b}norm1.bias"]
        fc = torch.zeros(dim, dim)
        if i == 0:
            nn.init.trunc_normal_(fc, std=0.02, generator=torch.Generator().manual_seed(0))
        out[f"{b}temporal_fc.weight"], out[f"{b}temporal_fc.bias"] = fc, torch.zeros(dim)
    out["time_embed"] = torch.zeros(1, 8, dim)
    return out


HF = Layout("hf", from_hf, "Hugging Face TimesformerForVideoClassification folder (config.json + model.safetensors or pytorch_model.bin)",
            options=hf_options)
OFFICIAL = Layout("official", from_official, "facebookresearch/TimeSformer checkpoint (model.blocks.i.*, temporal_fc, head)",
                  options=shape_options)
TORCHVISION_VIT = Layout("torchvision-vit", from_torchvision_vit,
                         "torchvision vit_b_16 state dict (conv_proj, encoder.layers.encoder_layer_i.*): the paper's ImageNet init",
                         options=shape_options)
# The Kinetics-400 protocol of the HF / original checkpoints: 8 frames 32 apart, short side 224, 224 crop, mean 0.45 std 0.225
K400_TRANSFORMS = Transforms("dense", frames=8, interval=32, interval_unit="source", short_side=224, crop=224, mean=(0.45, 0.45, 0.45),
                             std=(0.225, 0.225, 0.225),
                             layout="HF pixel_values (B, T, 3, H, W); original (B, 3, T, H, W)")
IMAGENET1K_V1 = Weights(
    tag="IMAGENET1K_V1",
    source="torchvision:ViT_B_16_Weights.IMAGENET1K_V1",
    layout=TORCHVISION_VIT,
    transforms=Transforms("dense", frames=8, interval=32, interval_unit="source", short_side=224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    num_classes=1000,
    meta={"dataset": "ImageNet-1k (image model: the spatial init of the paper)", "params": 86_567_656},
)


K400 = Weights(
    tag="K400",
    source="hf:facebook/timesformer-base-finetuned-k400",
    layout=HF,
    transforms=K400_TRANSFORMS,
    num_classes=400,
    classifier=("head.weight", "head.bias"),
    meta={"dataset": "Kinetics-400", "top1": 77.9, "protocol": "8 x 32 frames at 224, 3 crops x 1 clip (the paper)", "params": 121_566_352},
)
SCRATCH_TRANSFORMS = Transforms("tsn", frames=8, short_side=128, crop=112)  # from scratch on vidpipe's stores (position embeddings interpolate)


@register_model("timesformer", TimeSformerConfig, "clips", "TimeSformer, divided space-time attention (HF / official / ImageNet ViT init)",
                transforms=SCRATCH_TRANSFORMS, weights=(K400, IMAGENET1K_V1),
                layouts=(HF, OFFICIAL, TORCHVISION_VIT))
def timesformer(cfg: TimeSformerConfig, *, num_classes: int, in_dim: None = None) -> TimeSformer:
    return TimeSformer(cfg, num_classes)
