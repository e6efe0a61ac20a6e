"""TimeSformer whose temporal attention is RetNet retention ("timesformer_retnet").

The seed study's hybrid publishes no code; this is vidpipe's design of the idea:
- Each block's temporal attention (each patch position over the T frames) becomes multi-scale
  retention (`vidpipe.models.retnet.MultiScaleRetention`, the one retention in vidpipe), followed by
  the same `temporal_fc`. Spatial attention, MLP, norms, patch and position embeddings are TimeSformer's.
- No time embedding: retention encodes order by its per-head decay and xPos rotation of q and k.
- Retention runs in its parallel form (training), chunkwise (`retention_form="chunkwise"`, memory
  linear in T) or recurrent (streaming); the three agree to float64 precision.
- `cls_mode="causal"` (default): the video CLS that frame t's spatial attention sees is the running
  mean of the per-frame CLS outputs up to t, instead of their mean over all T, so the whole network is
  causal in time. Tokens are then (B, T + N*T, D): one CLS per frame, then the patches (patch-major,
  frame-minor); the clip's logits are the last frame's CLS. `model.stream()` takes frames one at a
  time with O(1) state per frame (retention states and running CLS sums) and gives logits after each.
  `cls_mode="mean"` keeps TimeSformer's single CLS averaged over all frames (not streamable).

Loading a TimeSformer checkpoint (Hugging Face folder, original layout, vidpipe's, or the ImageNet ViT
init): every key maps as for `timesformer` except, in each block, temporal attention's fused qkv
weight splits into retention's q, k, v (rows [q; k; v]) and its proj weight becomes retention's out;
their biases are dropped (retention has none), as is time_embed. Retention's gate `g` and its per-head
GroupNorm start fresh (the model's own initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidpipe.errors import VidpipeError
from vidpipe.models.registry import register_model
from vidpipe.models.retnet import MultiScaleRetention
from vidpipe.models.timesformer import (HF, IMAGENET1K_V1, K400, OFFICIAL, SCRATCH_TRANSFORMS, TORCHVISION_VIT, Block, TimeSformer,
                                        TimeSformerConfig, shape_options)
from vidpipe.models.weights import Layout, Weights
from vidpipe.typed import check

CLS_MODES = ("causal", "mean")
FORMS = ("parallel", "chunkwise")


@dataclass
class TimeSformerRetNetConfig(TimeSformerConfig):
    cls_mode: str = "causal"  # causal: running-mean video CLS (streamable); mean: TimeSformer's mean over all frames
    retention_form: str = "parallel"  # training form: parallel, or chunkwise (memory linear in T)
    chunk: int = 8  # frames per chunk in the chunkwise form
    # training saves only each block's input to its temporal update (norm, q/k/v/g, retention, GroupNorm, gate, output)
    # and recomputes the rest in backward, as memory-efficient attention does: the same outputs and gradients
    recompute_time: bool = True

    def __post_init__(self):
        super().__post_init__()
        check(self.attention == "divided", "model_options.attention: the RetNet hybrid replaces divided attention's temporal part; use divided")
        check(self.cls_mode in CLS_MODES, f"model_options.cls_mode must be one of {', '.join(CLS_MODES)}; got '{self.cls_mode}'")
        check(self.retention_form in FORMS, f"model_options.retention_form must be one of {', '.join(FORMS)}; got '{self.retention_form}'")
        check(self.chunk >= 1, f"model_options.chunk must be at least 1; got {self.chunk}")


class RetentionBlock(Block):
    def __init__(self, cfg: TimeSformerRetNetConfig, drop_path_rate: float):
        super().__init__(cfg, drop_path_rate)
        self.per_frame_cls, self.form, self.chunk = cfg.cls_mode == "causal", cfg.retention_form, cfg.chunk
        self.recompute = cfg.recompute_time

    def make_temporal_mixer(self, cfg: TimeSformerConfig) -> nn.Module:
        return MultiScaleRetention(cfg.dim, cfg.heads)

    def time_update(self, patches: torch.Tensor, t: int) -> torch.Tensor:
        """TimeSformer's temporal update; while training with recompute_time, under activation checkpointing
        (torch.utils.checkpoint: only `patches` is kept for backward, the RNG of drop-path replayed)."""
        if self.recompute and self.training and torch.is_grad_enabled():
            return checkpoint(super().time_update, patches, t, use_reentrant=False)
        return super().time_update(patches, t)

    def mix_time(self, x: torch.Tensor) -> torch.Tensor:  # (B*N, T, D) -> (B*N, T, D)
        if self.form == "chunkwise":
            return self.temporal_attn.forward_chunkwise(x, self.chunk)
        return self.temporal_attn(x)

    def video_cls(self, cls_per_frame: torch.Tensor) -> torch.Tensor:
        """causal: (B, T, D) -> (B, T, D), frame t's the mean of the outputs up to t; mean: TimeSformer's."""
        if not self.per_frame_cls:
            return super().video_cls(cls_per_frame)
        t = cls_per_frame.shape[1]
        return cls_per_frame.cumsum(1) / torch.arange(1, t + 1, device=cls_per_frame.device, dtype=cls_per_frame.dtype).view(1, t, 1)

    def step(self, cls: torch.Tensor, patches: torch.Tensor, t: int, state) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """One frame through the block: cls (B, 1, D), patches (B, N, D), state (retention state, CLS sum)."""
        b, n, d = patches.shape
        retention, cls_sum = state
        y, retention = self.temporal_attn.forward_step(self.temporal_norm1(patches.reshape(b * n, 1, d)), t, retention)
        patches = patches + self.temporal_fc(y.reshape(b, n, d))
        s = self.attn(self.norm1(torch.cat([cls, patches], 1)))  # (B, 1 + N, D)
        cls_sum = s[:, :1] if cls_sum is None else cls_sum + s[:, :1]
        h = torch.cat([cls + cls_sum / (t + 1), patches + s[:, 1:]], 1)
        h = h + self.mlp(self.norm2(h))
        return h[:, :1], h[:, 1:], (retention, cls_sum)


class TimeSformerRetNet(TimeSformer):
    block = RetentionBlock

    def __init__(self, cfg: TimeSformerRetNetConfig, num_classes: int):
        super().__init__(cfg, num_classes)
        del self.time_embed  # order comes from retention's decay and rotation
        self._frames = None

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def adapt_state(self, state: dict) -> dict:
        """A TimeSformer-derived state completed with what it cannot hold: retention's gate and GroupNorm
        take this model's own initialisation (also where a probe left them on the meta device)."""
        state = {k: v for k, v in super().adapt_state(state).items() if k != "time_embed"}
        for key, value in self.state_dict().items():
            fresh = ".temporal_attn.g." in key or ".temporal_attn.norm." in key
            if fresh and (key not in state or state[key].is_meta):
                state[key] = value
        return state

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, 3, T, H, W) -> (B, T + N*T, D) causal (one CLS per frame), (B, 1 + N*T, D) mean."""
        if self.cfg.cls_mode == "mean":
            return super().embed(x)  # no time_embed: nothing is added to the patches
        b, _, t, h, w = x.shape
        x = self.frame_tokens(x.transpose(1, 2).reshape(b * t, 3, h, w))  # (B*T, 1 + N, D)
        n, d = x.shape[1] - 1, x.shape[2]
        patches = x[:, 1:].reshape(b, t, n, d).transpose(1, 2).reshape(b, n * t, d)  # patch-major, frame-minor
        return torch.cat([x[:, :1].reshape(b, t, d), patches], 1), t

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, T + N*T, D) or (B, 1 + N*T, D)
        self._frames = x.shape[2]
        return super().forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls = x[:, self._frames - 1] if self.cfg.cls_mode == "causal" else x[:, 0]  # causal: the last frame's CLS
        cls = self.drop(cls)
        return cls if pre_logits else self.head(cls)

    def stream(self) -> "Stream":
        """A streaming session: `session.step(frame)` with one normalised frame (B, 3, H, W) returns logits (B, C)."""
        if self.cfg.cls_mode != "causal":
            raise ValueError("streaming needs model_options.cls_mode=causal (the mean CLS looks at every frame)")
        return Stream(self)


class Stream:
    """Frame-by-frame inference with O(1) state per frame: per block, the retention state (B*N, heads,
    d, d) and the running sum of the per-frame CLS outputs. Logits after frame t equal the causal
    model's on frames 0..t (tested)."""

    def __init__(self, model: TimeSformerRetNet):
        self.model, self.t, self.shape = model, 0, None
        self.states = [(None, None)] * len(model.blocks)

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        p = self.model.cfg.patch_size
        if frame.ndim != 4 or frame.shape[1] != 3 or min(frame.shape[2:]) < p or (self.shape and tuple(frame.shape) != self.shape):
            want = f"{self.shape}, as the stream's first frame" if self.shape else f"(B, 3, H, W) with H, W >= {p}"
            raise VidpipeError(f"Stream.step takes one normalised frame {want}; got {tuple(frame.shape)}")
        self.shape = tuple(frame.shape)
        m = self.model
        x = m.frame_tokens(frame)  # (B, 1 + N, D)
        cls, patches = x[:, :1], x[:, 1:]
        for i, block in enumerate(m.blocks):
            cls, patches, self.states[i] = block.step(cls, patches, self.t, self.states[i])
        self.t += 1
        return m.head(m.norm(cls)[:, 0])


def to_hybrid(state: dict) -> dict:
    """A TimeSformer state (vidpipe keys) -> the hybrid's: temporal qkv split into retention q, k, v,
    proj -> out (biases dropped), time_embed dropped."""
    if "blocks.0.temporal_attn.qkv.weight" not in state:
        raise ValueError("no blocks.0.temporal_attn.qkv.weight (not a divided TimeSformer)")
    out = {}
    for key, value in state.items():
        if key == "time_embed" or key.endswith((".temporal_attn.qkv.bias", ".temporal_attn.proj.bias")):
            continue
        if key.endswith(".temporal_attn.qkv.weight"):
            prefix = key.removesuffix("qkv.weight")
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{prefix}{name}.weight"] = part
        elif key.endswith(".temporal_attn.proj.weight"):
            out[key.replace(".proj.weight", ".out.weight")] = value
        else:
            out[key] = value
    return out


def _hybrid_options(state: dict, meta: dict) -> dict:
    options = shape_options(state, meta)
    options.pop("attention")  # shapes without time_embed read as space_only; the hybrid is divided
    return options


def _from_timesformer(layout: Layout) -> Layout:
    """A TimeSformer layout composed with to_hybrid; Hugging Face's architecture still comes from config.json."""
    options = _hybrid_options if layout.name != "hf" else (lambda state, meta: {k: v for k, v in layout.options(state, meta).items() if k != "attention"})
    return Layout(f"{layout.name} TimeSformer", lambda state: to_hybrid(layout.convert(state)), f"a TimeSformer checkpoint: {layout.description}",
                  options=options)


VIDPIPE_TIMESFORMER = Layout("vidpipe TimeSformer", to_hybrid, "a vidpipe `timesformer` state dict", options=_hybrid_options)
LAYOUTS = (VIDPIPE_TIMESFORMER, _from_timesformer(HF), _from_timesformer(OFFICIAL), _from_timesformer(TORCHVISION_VIT))
IMAGENET1K_V1_HYBRID = Weights(IMAGENET1K_V1.tag, IMAGENET1K_V1.source, LAYOUTS[-1], IMAGENET1K_V1.transforms, IMAGENET1K_V1.num_classes,
                               meta=IMAGENET1K_V1.meta)
# the Kinetics-400 TimeSformer, read into the hybrid (its temporal q, k, v and output become retention's): the TimesNet recipes' init
K400_HYBRID = Weights(K400.tag, K400.source, LAYOUTS[1], K400.transforms, K400.num_classes,
                      meta={"dataset": "Kinetics-400 (a TimeSformer checkpoint; retention's gate and norm start fresh)",
                            "protocol": K400.meta["protocol"]})


@register_model("timesformer_retnet", TimeSformerRetNetConfig, "clips",
                "TimeSformer with RetNet retention over time (causal, streamable; loads TimeSformer checkpoints)",
                transforms=SCRATCH_TRANSFORMS,
                weights=(K400_HYBRID, IMAGENET1K_V1_HYBRID), layouts=LAYOUTS)
def timesformer_retnet(cfg: TimeSformerRetNetConfig, *, num_classes: int, in_dim: None = None) -> TimeSformerRetNet:
    return TimeSformerRetNet(cfg, num_classes)
