"""`vidpipe predict`: a trained run on videos that are in no store.

A video becomes the model's input exactly as the run's training data was made, all from the run's
provenance: decoded like its store (mode, frames or fps, size, geometry, the frame codec's round trip),
sampled with the run's test sampling and views, and for a feature head passed through the same frozen
backbone, rounded to the feature store's dtype and standardised with the training split's statistics.
So predict on a store's source files gives what `vidpipe eval` gives on that store (tested).

Three ways over a video:
- whole (`predict_many`): one prediction per video, made as eval makes it;
- windows (`windows`): windows of W seconds every S seconds, each treated as a video of its own, from
  one pass of one decoder that holds only the frames of the windows still open;
- stream (`stream`): causal models (`temporal_retnet`, `timesformer_retnet` with causal CLS) take frames
  one at a time at a fixed rate through their recurrent form, with a prediction after every frame (or
  every k): memory stays flat whatever the length.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vidpipe.data.build import normalise_features
from vidpipe.data.sampling import frame_indices
from vidpipe.errors import VidpipeError
from vidpipe.files import sha256_file
from vidpipe.io.decode import check_usable, fps_indices, uniform_indices
from vidpipe.io.ffmpeg import DecodeError, Geometry, probe
from vidpipe.models.backbones import build_backbone
from vidpipe.predict.frames import FrameReader
from vidpipe.predict.inputs import VideoInputs
from vidpipe.devices import amp_dtype, resolve_device
from vidpipe.stores.features import backbone_features
from vidpipe.train.card import LoadedRun, load_run
from vidpipe.train.scoring import FUSIONS, fuse_views, ranking


@dataclass
class Prediction:
    """One prediction: a whole video, a window of it (start/end in seconds), or a stream after `frames`
    frames (`end` = their time). `scores` are the fused class probabilities; `ranked` orders the classes
    (the scores, or the views' votes with fusion="vote"); `error` says why a video gave none."""

    source: str
    classes: list[str] = field(repr=False, default_factory=list)
    scores: np.ndarray | None = field(repr=False, default=None)
    ranked: np.ndarray | None = field(repr=False, default=None)
    decode_ms: float = 0.0
    model_ms: float = 0.0
    start: float | None = None
    end: float | None = None
    frames: int | None = None
    error: str | None = None

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.ranked, kind="stable")[:k]
        return [(self.classes[c], float(self.scores[c])) for c in order]

    def to_json(self, k: int = 5) -> dict:
        d = {"source": self.source}
        for key in ("start", "end", "frames"):
            value = getattr(self, key)
            if value is not None:
                d[key] = round(value, 3) if isinstance(value, float) else value
        if self.error is not None:
            return {**d, "error": self.error}
        return {**d, "top": [{"class": c, "p": round(p, 6)} for c, p in self.top(k)],
                "decode_ms": round(self.decode_ms, 1), "model_ms": round(self.model_ms, 1)}


class Predictor:
    """A run's checkpoint with everything that turns a video into its input. Build with `Predictor.load`."""

    def __init__(self, run: LoadedRun, device: torch.device, views: int | None = None, crops: int | None = None,
                 fusion: str = "mean", backbone_weights: str | None = None, warn=None):
        if fusion not in FUSIONS:
            raise VidpipeError(f"--fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
        card = run.card
        self.ckpt, self.card, self.device, self.fusion = run.checkpoint, card, device, fusion
        self.cfg = card.train_config
        self.classes, self.input = card.classes, card.input.kind
        if card.input.decoder == "dali" and warn:  # DALI's resize is not FFmpeg's: said once, not hidden
            warn(f"{card.model} was trained on a store DALI decoded; predict decodes with FFmpeg, whose pixels may "
                 "differ slightly (DALI and FFmpeg stores agree to 30 dB PSNR or more on VP9, tests/io/test_dali.py)")
        self.amp = amp_dtype(self.cfg.amp, device)
        self.model = run.model.to(device).eval()
        # the store's decode and frame codec, the run's test views: the same steps an export's sidecar gives
        self.inputs = VideoInputs(card.input, views, int(crops) if crops and card.input.kind == "clips" else None, device)
        self.spec = self.inputs.spec
        if self.input == "clips":
            self.sampling, self.transform = self.inputs.sampling, self.inputs.transform
            self.frame_transform = self.inputs.frame_transform
        else:
            if views is not None or crops is not None:
                raise VidpipeError(f"--views and --crops apply to models that read clips; {card.model} reads "
                                   f"{self.input.replace('_', ' ')}, sampled as it was trained")
            prov = card.provenance
            self.sampling = card.input.sampling(train=False)
            self.backbone, self.preprocess = load_backbone(prov, self.cfg.data.path, backbone_weights)
            self.backbone.to(device)
            self.feature_dtype = np.dtype(prov["dtype"])
            norm = card.feature_norm
            self.norm = None if norm is None else (torch.tensor(norm["mean"]), torch.tensor(norm["std"]))

    @classmethod
    def load(cls, run_or_ckpt: str | Path, device: str = "auto", views: int | None = None, crops: int | None = None,
             fusion: str = "mean", backbone_weights: str | None = None, warn=None) -> "Predictor":
        """The run's `best` checkpoint (else `last`), or the checkpoint file given. `warn(message)` hears what
        may differ from training (a store DALI decoded)."""
        device = resolve_device(device)
        return cls(load_run(run_or_ckpt, device), device, views, crops, fusion, backbone_weights, warn)

    @property
    def views(self) -> int:
        if self.input != "clips":
            return 1
        return self.sampling.views(test=True) * self.transform.cfg.test_crops

    # ------------------------------------------------------------------ frames -> scores
    def decode(self, path: str | Path) -> tuple[np.ndarray, dict]:
        """A video as its store holds it: (T, H, W, 3) uint8 and the decode's metadata. Raises DecodeError."""
        return self.inputs.stored(path)

    def as_stored(self, frames: np.ndarray, pix_fmt: str | None = None) -> np.ndarray:
        return self.inputs.as_stored(frames, pix_fmt)

    def _features(self, frames: np.ndarray) -> torch.Tensor:
        """Stored frames (T, H, W, 3) -> the backbone's output as the feature store holds it: (1, T, D)
        frame features or (1, C, D, t, h, w) token maps, in the store's dtype (standardising is the caller's)."""
        pooled, maps = backbone_features(self.backbone, self.preprocess, frames[None], self.device, tokens=self.input == "clip_tokens")
        x = (pooled if self.input == "frame_features" else maps).astype(self.feature_dtype).astype(np.float32)
        return torch.from_numpy(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # (views, ...) -> (views, C) probabilities
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            return self.model(x).float().softmax(-1)

    def view_scores(self, frames: np.ndarray) -> torch.Tensor:
        """Stored frames (T, H, W, 3) -> class probabilities of each view (views, C), the run's test sampling."""
        if self.input == "clips":
            return self._forward(self.inputs.clips(frames))
        x = self._features(frames)
        if self.input == "frame_features":  # the segment centres of the features, as eval samples them
            x = x[:, frame_indices(x.shape[1], self.sampling, train=False).ravel()]
        return self._forward(normalise_features(x.to(self.device), self.norm))

    def fused(self, source: str, frames: np.ndarray, **fields) -> Prediction:
        t0 = time.perf_counter()
        scores, votes = fuse_views(self.view_scores(frames)[None])
        return Prediction(source, self.classes, scores[0], ranking(scores, votes, self.fusion)[0],
                          model_ms=1000 * (time.perf_counter() - t0), **fields)

    # ------------------------------------------------------------------ whole videos
    def predict_many(self, paths: list[Path], workers: int = 1) -> Iterator[Prediction]:
        """One Prediction per video, in order; `workers` videos decode ahead while the model runs. A video
        that cannot be decoded gives a Prediction with its `error`, and the rest go on."""

        def load(path):
            t0 = time.perf_counter()
            try:
                frames, _ = self.decode(path)
                return frames, 1000 * (time.perf_counter() - t0), None
            except (DecodeError, VidpipeError) as e:
                return None, 0.0, str(e)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            ahead = max(1, workers) + 1  # decoded videos waiting for the model: bounded, whatever the list length
            futures = [pool.submit(load, p) for p in paths[:ahead]]
            for i, path in enumerate(paths):
                frames, decode_ms, error = futures[i].result()
                futures[i] = None  # let the frames go
                if i + ahead < len(paths):
                    futures.append(pool.submit(load, paths[i + ahead]))
                if error is not None:
                    yield Prediction(str(path), error=error)
                else:
                    yield self.fused(str(path), frames, decode_ms=decode_ms)

    # ------------------------------------------------------------------ windows
    def _probe(self, path) -> tuple:
        """(VideoInfo, the store's resize and crop for it) of a usable video file; raises DecodeError."""
        info = probe(path)
        check_usable(info)
        return info, Geometry.cover(info.display_size, self.spec.height, self.spec.width)

    def window_plan(self, num_frames: int, fps: float, window: float, stride: float) -> list[tuple[float, float, list[int]]]:
        """[(start s, end s, source frame indices)]: windows of `window` seconds every `stride` seconds,
        plus one that ends with the video when the stride leaves its last frames out (a video shorter
        than a window is one window), each sampled as the store samples a whole video."""
        if window <= 0 or stride <= 0:
            raise VidpipeError(f"--window and --stride must be positive seconds; got {window:g} and {stride:g}")
        length, step = max(1, round(window * fps)), max(1, round(stride * fps))
        starts = list(range(0, max(num_frames - length, 0) + 1, step))
        if starts[-1] + length < num_frames:
            starts.append(num_frames - length)
        plan = []
        for a in starts:
            n = min(length, num_frames - a)
            local = uniform_indices(n, self.spec.frames)[0] if self.spec.fps is None else fps_indices(n, fps, self.spec.fps, self.spec.max_seconds)[0]
            plan.append((a / fps, (a + n) / fps, [a + i for i in local]))
        return plan

    def windows(self, path: str | Path, window: float, stride: float) -> Iterator[Prediction]:
        """A prediction per window, from one sequential decode holding only the open windows' frames."""
        info, geometry = self._probe(path)
        if not info.fps:
            raise DecodeError("no frame rate in the container: windows need the frames' times")
        plan = self.window_plan(info.num_frames, info.fps, window, stride)
        pending, opened, k = [], 0, -1  # windows started and not finished: [(plan entry, {index: frame})]
        t0 = time.perf_counter()
        for k, frame in FrameReader(path, self.spec.height, self.spec.width, geometry=geometry, stream=info.stream):
            while opened < len(plan) and min(plan[opened][2]) <= k:
                pending.append((plan[opened], {}))
                opened += 1
            for (_, _, indices), got in pending:
                if k in indices:
                    got[k] = frame
            while pending and max(pending[0][0][2]) <= k:  # windows finish in start order
                (start, end, indices), got = pending.pop(0)
                frames = self.as_stored(np.stack([got[i] for i in indices]), info.pix_fmt)
                decode_ms = 1000 * (time.perf_counter() - t0)
                yield self.fused(str(path), frames, decode_ms=decode_ms, start=start, end=end)
                t0 = time.perf_counter()
        for (start, end, indices), _ in pending + [(p, None) for p in plan[opened:]]:
            yield Prediction(str(path), start=start, end=end, error=f"the video ends at frame {k + 1}, before this window's frame {max(indices) + 1}")

    # ------------------------------------------------------------------ streams
    def frame_input(self, frame: np.ndarray, pix_fmt: str | None = None) -> torch.Tensor:
        """One frame (H, W, 3) as decoded (from a source of `pix_fmt`, where known) -> what the model's stream
        takes: a normalised centre crop (1, 3, S, S), or the frame's standardised features (1, D)."""
        frame = self.as_stored(frame[None], pix_fmt)
        if self.input == "clips":
            return self.frame_transform.test(torch.from_numpy(frame[None, None]).to(self.device))[:, :, 0]
        if self.input != "frame_features":
            raise VidpipeError(f"{self.card.model} reads clip token maps; streams need a causal model over frames")
        return normalise_features(self._features(frame).to(self.device), self.norm)[:, 0]  # (1, 1, D) -> (1, D)

    def causal_scores(self, inputs: list[torch.Tensor]) -> np.ndarray:
        """The reference for streams: the model's ordinary (parallel) forward on every frame's input at once."""
        x = torch.stack(inputs, 2) if self.input == "clips" else torch.stack(inputs, 1)  # (1, 3, t, S, S) | (1, t, D)
        return self._forward(x)[0].cpu().numpy()

    def stream_session(self):
        if not hasattr(self.model, "stream"):
            raise VidpipeError(f"{self.card.model} is not causal, so it cannot stream; use --window, or a causal model "
                               "(temporal_retnet, timesformer_retnet)")
        try:
            return self.model.stream()
        except ValueError as e:
            raise VidpipeError(str(e)) from None

    def default_stream_rate(self) -> float:
        """Frames per second that space a stream's frames as the model's frames were spaced in training: the
        store's fps for an fps store; for a uniform store, its frames per second of video (T over the
        training videos' mean duration) divided by the stored frames between the model's frames."""
        clip = self.card.input.clip
        if clip.get("mode") == "fps":
            return float(clip["fps"])
        index = training_store_index(self.cfg.data.path)
        entry = (index or {}).get("splits", {}).get(self.cfg.data.train_split, {})
        if not entry.get("source_seconds"):
            raise VidpipeError(f"the training store {self.cfg.data.path} is not here to tell how fast the model's frames were; "
                               "pass --stream-fps")
        stored_rate = clip["frames"] * entry["count"] / entry["source_seconds"]
        s = self.sampling
        spacing = clip["frames"] / s.num_clips if s.is_tsn else s.frame_interval
        return stored_rate / spacing

    def stream(self, source: str, rate: float | None = None, every: int = 1, raw: tuple[int, int, float] | None = None,
               inputs: list | None = None) -> Iterator[Prediction]:
        """A prediction after every `every` frames of `source` (file, URL, "-") resampled to `rate` fps.
        `inputs`, when given, collects every frame's model input (the tests' reference)."""
        session = self.stream_session()
        rate = rate or self.default_stream_rate()
        geometry, stream, pix_fmt = None, None, None
        if source != "-" and not raw and Path(source).is_file():  # a file: the store's exact geometry, its moving stream
            info, geometry = self._probe(source)
            stream, pix_fmt = info.stream, info.pix_fmt
        t0 = time.perf_counter()
        for k, frame in FrameReader(source, self.spec.height, self.spec.width, rate=rate, geometry=geometry, raw=raw, stream=stream):
            t1 = time.perf_counter()
            x = self.frame_input(frame, pix_fmt)
            if inputs is not None:
                inputs.append(x)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                probs = session.step(x).float().softmax(-1)[0].cpu().numpy()
            t2 = time.perf_counter()
            if (k + 1) % every == 0:
                yield Prediction(source, self.classes, probs, probs, decode_ms=1000 * (t1 - t0), model_ms=1000 * (t2 - t1),
                                 end=(k + 1) / rate, frames=k + 1)
            t0 = time.perf_counter()


def training_store_index(data_path: str) -> dict | None:
    """The store.json of the clip store a run's data came from (through a feature store's source), if here."""
    try:
        index = json.loads((Path(data_path) / "store.json").read_text())
        if index.get("format") == "vidpipe-features":
            index = json.loads((Path(index["source_store"]["path"]) / "store.json").read_text())
        return index
    except (OSError, ValueError, KeyError):
        return None


def load_backbone(prov: dict, data_path: str, override: str | None = None):
    """The frozen backbone a feature run's features came from, found and checked: random weights are
    rebuilt; torchvision weights come from torch's cache (or `override`); a weights file is looked for at
    `override` and where the feature store read it, and must have the recorded sha256."""
    arch, w = prov["backbone"], prov["weights"]
    if w["random"]:
        name = "random"
    elif w["source"] == "torchvision":
        name = override or w["id"].rsplit(".", 1)[1]
    else:
        index = {}
        try:
            index = json.loads((Path(data_path) / "store.json").read_text())
        except (OSError, ValueError):
            pass
        recorded = (index.get("weights") or {}).get("path")
        tried = [p for p in (override, recorded) if p]
        name = next((p for p in tried if Path(p).is_file() and sha256_file(p) == w["sha256"]), None)
        if name is not None and w.get("tag"):  # TAG=PATH: the tag's preprocessing, as the features were made
            name = f"{w['tag']}={name}"
        if name is None:
            where = f" (not at {', '.join(tried)}, or with another sha256)" if tried else ""
            raise VidpipeError(f"this run's features come from {arch} weights {w['id'].removeprefix('file:')} (sha256 {w['sha256'][:16]}...){where}; "
                               "pass --backbone-weights PATH to that file")
    try:
        model, _, pre = build_backbone(arch, name)
    except VidpipeError as e:
        if w["source"] != "torchvision" or override:
            raise
        raise VidpipeError(f"this run's features come from {arch} with {w['id'].removeprefix('torchvision:')}, which is not in torch's cache "
                           f"({torch.hub.get_dir()}/checkpoints) and could not be fetched ({str(e).split(';')[0].split('(')[-1].rstrip(')')}); "
                           "put the file there or pass --backbone-weights PATH") from None
    if json.loads(json.dumps(pre.to_dict())) != prov["preprocess"]:
        raise VidpipeError(f"the backbone weights given preprocess as {pre.source}, the run's features as {prov['preprocess']['source']}; "
                           "pass the weights the features were made with")
    return model.eval(), pre
