"""The synthetic temporal-order dataset: classes that only temporal models can tell apart.

Classes come in pairs. Each pair has one generative process (a disc growing, a colour ramp, a
brightness ramp, a square moving, dots appearing); one member plays it forward, the other plays the
very same frames backwards. Background, position, speed, extent and noise are random per video, so
the frames of a video are a sample from the same distribution whichever member it belongs to: an
order-blind model (mean of frame features) is at chance within each pair, a temporal one can be perfect.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidpipe.errors import VidpipeError
from vidpipe.io.ffmpeg import ENCODERS, encode_video

# (pair name, forward member, reversed member)
PAIRS = [
    ("size", "grow", "shrink"),
    ("colour", "red_to_blue", "blue_to_red"),
    ("light", "brighten", "darken"),
    ("move", "left_to_right", "right_to_left"),
    ("count", "rising", "falling"),
]
CLASSES = [f"{pair}_{member}" for pair, fwd, rev in PAIRS for member in (fwd, rev)]
TRAIN_FRACTION = 0.7


@dataclass
class SynthConfig:
    videos_per_class: int = 20
    codec: str = "h264"
    width: int = 128
    height: int = 96
    frames: int = 48  # an odd multiple of the 16 frames extraction keeps (the card's): see `reversal_safe`
    fps: float = 25.0
    seed: int = 0
    noise: float = 3.0  # std of per-pixel Gaussian noise, in uint8 levels
    encoder_args: tuple[str, ...] = ()  # extra ffmpeg output options, e.g. ("-q:v", "5") for a lower bitrate

    def __post_init__(self):
        if self.codec not in ENCODERS:
            raise VidpipeError(f"--codec must be one of {', '.join(ENCODERS)}; got '{self.codec}'")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 32:
            raise VidpipeError(f"--size must be even and at least 32x32 (4:2:0 video); got {self.width}x{self.height}")
        if self.frames < 4:
            raise VidpipeError(f"--frames must be at least 4; got {self.frames}")
        if self.videos_per_class < 2:
            raise VidpipeError("--videos-per-class must be at least 2 (one train, one test)")


def reversal_safe(source_frames: int, stored_frames: int) -> bool:
    """Whether extraction's centre-of-segment sampling picks a set of frames that time reversal maps onto
    itself, so the two members of a pair keep exactly the same frames once stored. True when the source
    count is an odd multiple of the stored count (or the store loops a shorter video in full)."""
    from vidpipe.io.decode import uniform_indices

    picked, _ = uniform_indices(source_frames, stored_frames)
    return sorted(picked) == sorted(source_frames - 1 - i for i in picked)


def _ramp(rng: np.random.Generator, t: int) -> np.ndarray:
    """A monotone 0 -> 1 progress curve over t frames; the change happens in a random window (speed)."""
    length = rng.uniform(0.5, 1.0)
    start = rng.uniform(0.0, 1.0 - length)
    u = np.clip((np.linspace(0.0, 1.0, t) - start) / length, 0.0, 1.0)
    return u


def render_forward(pair: str, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """The forward member's frames, uint8 (T, H, W, 3). The reversed member is this, reversed in time."""
    t, h, w = cfg.frames, cfg.height, cfg.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = rng.uniform(20, 90, size=3).astype(np.float32)
    frames = np.empty((t, h, w, 3), np.float32)
    frames[:] = background
    u = _ramp(rng, t)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    if pair == "size":
        r0, r1 = rng.uniform(0.05, 0.15) * h, rng.uniform(0.3, 0.45) * h
        colour = rng.uniform(150, 255, size=3)
        for i in range(t):
            r = r0 + (r1 - r0) * u[i]
            frames[i][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    elif pair == "colour":
        r = rng.uniform(0.2, 0.35) * h
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        for i in range(t):
            frames[i][disc] = (1 - u[i]) * np.array([230.0, 30, 30]) + u[i] * np.array([30.0, 30, 230])
    elif pair == "light":
        pattern = rng.uniform(0.6, 1.0, size=(h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
        b0, b1 = rng.uniform(0.15, 0.35), rng.uniform(0.75, 1.0)
        for i in range(t):
            frames[i] = 255 * pattern * (b0 + (b1 - b0) * u[i])
    elif pair == "move":
        half = rng.uniform(0.08, 0.15) * h
        x0, x1 = rng.uniform(0.1, 0.3) * w, rng.uniform(0.7, 0.9) * w
        colour = rng.uniform(150, 255, size=3)
        for i in range(t):
            x = x0 + (x1 - x0) * u[i]
            frames[i][(np.abs(xx - x) <= half) & (np.abs(yy - cy) <= half)] = colour
    elif pair == "count":
        n_max = int(rng.integers(5, 9))
        n_min = int(rng.integers(0, 2))
        spots = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(n_max, 2))
        r = rng.uniform(0.05, 0.08) * h
        colour = rng.uniform(150, 255, size=3)
        for i in range(t):
            n = int(round(n_min + (n_max - n_min) * u[i]))
            for sx, sy in spots[:n]:
                frames[i][(xx - sx) ** 2 + (yy - sy) ** 2 <= r * r] = colour
    else:
        raise ValueError(f"unknown pair {pair}")
    frames += rng.normal(0.0, cfg.noise, size=frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).round().astype(np.uint8)


def render(class_name: str, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Frames of one video of `class_name`; same rng state -> the partner class gets the reversed frames."""
    for pair, fwd, rev in PAIRS:
        if class_name in (f"{pair}_{fwd}", f"{pair}_{rev}"):
            frames = render_forward(pair, rng, cfg)
            return frames if class_name.endswith(fwd) else frames[::-1].copy()
    raise VidpipeError(f"unknown synthetic class '{class_name}'; classes are {', '.join(CLASSES)}")


def video_seed(seed: int, class_index: int, video_index: int) -> list[int]:
    # The pair (not the class) seeds the content: video k of a class and video k of its partner are
    # the same frames in opposite orders, which makes "order is the only signal" exact.
    return [seed, class_index // 2, video_index]


def synth(out: str | Path, cfg: SynthConfig | None = None, workers: int = 2, progress=None) -> dict:
    """Write the dataset to out/{train,test}/<class>/<class>_<k>.<ext> and out/synth.json; returns counts."""
    cfg = cfg or SynthConfig()
    out = Path(out)
    ext, _ = ENCODERS[cfg.codec]
    n_train = max(1, min(cfg.videos_per_class - 1, round(TRAIN_FRACTION * cfg.videos_per_class)))
    jobs = []
    for ci, name in enumerate(CLASSES):
        for k in range(cfg.videos_per_class):
            split = "train" if k < n_train else "test"
            jobs.append((ci, name, k, out / split / name / f"{name}_{k:04d}{ext}"))

    def make(job):
        ci, name, k, path = job
        if not path.exists():  # rerunning completes an interrupted synth
            path.parent.mkdir(parents=True, exist_ok=True)
            frames = render(name, np.random.default_rng(video_seed(cfg.seed, ci, k)), cfg)
            encode_video(frames, path, cfg.codec, cfg.fps, extra=list(cfg.encoder_args))
        return path

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in pool.map(make, jobs):
            if progress:
                progress()
    summary = {"config": asdict(cfg), "classes": CLASSES, "train_per_class": n_train, "test_per_class": cfg.videos_per_class - n_train}
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def within_pair_accuracy(cm, classes: list[str]) -> float:
    """Of the test videos predicted as a member of their own pair, the fraction given the right member.

    0.5 is chance: what an order-blind model gets, since the partners have the same frames.
    """
    index = {c: i for i, c in enumerate(classes)}
    right = inside = 0
    for pair, fwd, rev in PAIRS:
        a, b = index[f"{pair}_{fwd}"], index[f"{pair}_{rev}"]
        right += int(cm[a, a] + cm[b, b])
        inside += int(cm[a, a] + cm[a, b] + cm[b, a] + cm[b, b])
    return right / inside if inside else 0.0
