"""RetNet multi-scale retention over frame features ("temporal_retnet").

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models" (2023).
Per head h a decay gamma_h = 1 - 2^(-5-h). Parallel form: O = (Q K^T * D) V with D[n, m] = gamma^(n-m)
for n >= m, else 0. Recurrent form: S_n = gamma S_{n-1} + K_n^T V_n, o_n = Q_n S_n. Q and K are rotated
by their position (xPos-style rotary angles) and K is scaled by d^-1/2; each head is GroupNorm-ed; the
output is (swish(X W_G) * Y) W_O. A third, chunkwise form runs the parallel form inside chunks of C
steps and the recurrence across them: memory linear in T for long sequences. All three are
implemented without the reference code's extra row normalisations, so they agree to float64
precision (tested). Retention is causal, so the model can run frame by frame (`forward_recurrent`)
for streaming. `MultiScaleRetention` is the one retention in vidpipe: TimeSformer's RetNet hybrid
uses it over each patch position's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.models.registry import register_model
from vidpipe.typed import check, check_layers


@dataclass
class TemporalRetNetConfig:
    dim: int = 256
    depth: int = 2
    heads: int = 4
    ffn_ratio: float = 2.0
    dropout: float = 0.1

    def __post_init__(self):
        check_layers(self)
        check((self.dim // self.heads) % 2 == 0, f"model_options.dim / heads must be even (rotation acts on pairs); got {self.dim // self.heads}")


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class MultiScaleRetention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0 and (dim // heads) % 2 == 0, "head dim must be even"
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.g = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm = nn.GroupNorm(heads, dim)
        self.register_buffer("gamma", 1 - 2.0 ** (-5.0 - torch.arange(heads, dtype=torch.float32)), persistent=False)
        angle = 1.0 / (10000 ** torch.linspace(0, 1, self.head_dim // 2))
        self.register_buffer("angle", angle.repeat_interleave(2), persistent=False)  # (d,)

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        b, t, _ = x.shape
        shape = (b, t, self.heads, self.head_dim)
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q, self.k, self.v))  # (B, H, T, d)
        theta = positions[:, None].to(x.dtype) * self.angle.to(x.dtype)  # (T, d)
        sin, cos = theta.sin(), theta.cos()
        q = q * cos + rotate_every_two(q) * sin
        k = (k * cos + rotate_every_two(k) * sin) * self.head_dim**-0.5
        return q, k, v

    def _finish(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, t, dim = x.shape
        y = self.norm(y.transpose(1, 2).reshape(b * t, dim)).view(b, t, dim)  # per-head GroupNorm
        return self.out(F.silu(self.g(x)) * y)

    def _decay(self, t: int, dtype, device) -> torch.Tensor:  # (H, T, T): gamma^(n-m) for n >= m, else 0
        n = torch.arange(t, device=device)
        diff = (n[:, None] - n[None, :]).to(dtype)
        return (self.gamma.to(dtype)[:, None, None] ** diff.clamp(min=0)).masked_fill(diff < 0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # parallel form, (B, T, dim) -> (B, T, dim)
        t = x.shape[1]
        q, k, v = self._qkv(x, torch.arange(t, device=x.device))
        y = ((q @ k.transpose(-1, -2)) * self._decay(t, x.dtype, x.device)) @ v  # (B, H, T, d)
        return self._finish(x, y)

    def forward_chunkwise(self, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """Chunkwise form, (B, T, dim) -> (B, T, dim): parallel inside chunks of `chunk` steps, the state
        S = sum_m gamma^(end-m) k_m^T v_m carried across them (memory O(T * chunk), not O(T^2))."""
        b, t, _ = x.shape
        q, k, v = self._qkv(x, torch.arange(t, device=x.device))
        gamma = self.gamma.to(x.dtype)[None, :, None, None]  # (1, H, 1, 1)
        state, outs = None, []
        for start in range(0, t, chunk):
            qc, kc, vc = (z[:, :, start : start + chunk] for z in (q, k, v))
            n = qc.shape[2]
            y = ((qc @ kc.transpose(-1, -2)) * self._decay(n, x.dtype, x.device)) @ vc  # inside the chunk
            j = torch.arange(n, device=x.device, dtype=x.dtype)[:, None]  # (n, 1)
            if state is not None:  # earlier chunks, through the state: gamma^(j+1) q_j S
                y = y + (qc * gamma ** (j + 1)) @ state
            kv = (kc * gamma ** (n - 1 - j)).transpose(-1, -2) @ vc  # (B, H, d, d)
            state = kv if state is None else gamma ** n * state + kv
            outs.append(y)
        return self._finish(x, torch.cat(outs, dim=2))

    def forward_step(self, x: torch.Tensor, position: int, state: torch.Tensor | None):
        """Recurrent form for one frame: x (B, 1, dim) -> (out (B, 1, dim), new state (B, H, d, d))."""
        q, k, v = self._qkv(x, torch.tensor([position], device=x.device))
        kv = k.transpose(-1, -2) @ v  # (B, H, d, d)
        state = kv if state is None else self.gamma.to(x.dtype)[None, :, None, None] * state + kv
        return self._finish(x, q @ state), state


class RetentionBlock(nn.Module):
    def __init__(self, cfg: TemporalRetNetConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.msr = MultiScaleRetention(cfg.dim, cfg.heads)
        hidden = int(cfg.dim * cfg.ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.msr(self.ln1(x)))
        return x + self.drop(self.ffn(self.ln2(x)))

    def forward_step(self, x, position, state):
        y, state = self.msr.forward_step(self.ln1(x), position, state)
        x = x + self.drop(y)
        return x + self.drop(self.ffn(self.ln2(x))), state


class TemporalRetNet(nn.Module):
    def __init__(self, cfg: TemporalRetNetConfig, num_classes: int, in_dim: int):
        super().__init__()
        self.num_features = cfg.dim
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.blocks = nn.ModuleList(RetentionBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, dim)
        x = self.proj(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_recurrent(self, x: torch.Tensor) -> torch.Tensor:
        """The same features computed frame by frame with O(1) state per layer (streaming)."""
        session = Stream(self)
        return torch.stack([session.features(x[:, n]) for n in range(x.shape[1])], dim=1)

    def stream(self) -> "Stream":
        """A streaming session: `session.step(features)` with one frame's features (B, D) returns logits (B, C)."""
        return Stream(self)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)  # (B, dim)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class Stream:
    """Frame-by-frame inference with O(1) state: per block the retention state (B, heads, d, d), and the
    running sum of the normalised outputs the head averages. Logits after frame t equal the model's on
    frames 0..t (tested)."""

    def __init__(self, model: TemporalRetNet):
        self.model, self.t, self.total = model, 0, None
        self.states = [None] * len(model.blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, dim): this frame's output, state advanced
        m = self.model
        if x.ndim != 2 or x.shape[1] != m.proj.in_features:
            raise VidpipeError(f"Stream.step takes one frame's features (B, {m.proj.in_features}); got {tuple(x.shape)}")
        h = m.proj(x[:, None])
        for i, block in enumerate(m.blocks):
            h, self.states[i] = block.forward_step(h, self.t, self.states[i])
        self.t += 1
        return m.norm(h[:, 0])

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, num_classes)
        h = self.features(x)
        self.total = h if self.total is None else self.total + h
        return self.model.head(self.total / self.t)


@register_model("temporal_retnet", TemporalRetNetConfig, "frame_features", "RetNet multi-scale retention over frame features")
def temporal_retnet(cfg: TemporalRetNetConfig, *, num_classes: int, in_dim: int) -> TemporalRetNet:
    return TemporalRetNet(cfg, num_classes, in_dim)
