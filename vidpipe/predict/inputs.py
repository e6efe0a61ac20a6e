"""A new video made into a model's input from an `InputSpec` alone: the run card's, or an export sidecar's
`input_spec` (so a deployment rebuilds exactly what the exported model was trained on, without the run).

    spec = InputSpec.from_dict(json.load(open("model.onnx.json"))["input_spec"])
    clips = VideoInputs(spec).clips_of("video.mp4")   # (views, 3, T, S, S) float32, normalised
    logits = onnxruntime.InferenceSession("model.onnx").run(None, {"clip": clips.numpy()})[0]

The steps are the store's and the run's: the store's decode (frames or fps, size, geometry, rotation),
the store's frame codec round trip (JPEG quality and chroma subsampling), the run's test sampling and
the test transform (resize, crops, mean/std).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from vidpipe.data.augment import DeviceTransform
from vidpipe.data.inputs import InputSpec
from vidpipe.data.loaders import ClipConfig
from vidpipe.io import jpeg, pyav
from vidpipe.io.decode import decode_clip
from vidpipe.io.ffmpeg import probe


class VideoInputs:
    """`stored(path)`: the video as its store holds it; `clips(frames)`: a clip model's test views of it."""

    def __init__(self, spec: InputSpec, views: int | None = None, crops: int | None = None, device: str | torch.device = "cpu"):
        self.input_spec, self.device = spec, torch.device(device)
        self.spec = spec.clip_spec()  # the store's decode: frames, size, fps
        self.jpeg_quality = spec.jpeg_quality
        self.jpeg_subsampling = spec.clip.get("jpeg_subsampling", "444")  # stores before the choice: 4:4:4
        self.decoder = "pyav" if pyav.pyav_installed() else "ffmpeg"  # the same pixels (tests/io/test_decoders.py)
        if spec.kind == "clips":
            spec = spec.with_views(views, crops)  # --views on TSN is refused there
            self.sampling, aug = spec.sampling(train=False), spec.augment_config()
            self.clip_config, self.transform = ClipConfig(self.sampling, train=False, augment=aug), DeviceTransform(aug)
            self.frame_transform = DeviceTransform(dataclasses.replace(aug, test_crop="center"))  # streams: the centre crop

    def stored(self, path: str | Path) -> tuple[np.ndarray, dict]:
        """A video as its store holds it: (T, H, W, 3) uint8 and the decode's metadata. Raises DecodeError."""
        info = probe(path)
        clip, meta = decode_clip(path, self.spec, info=info, decoder=self.decoder)
        return self.as_stored(clip, info.pix_fmt), meta

    def as_stored(self, frames: np.ndarray, pix_fmt: str | None = None) -> np.ndarray:
        """The frame codec's round trip (JPEG stores), so the model sees the pixels training saw: the store's
        quality and chroma subsampling (auto: as extraction chose it from the source's pixel format)."""
        if self.jpeg_quality is None:
            return frames
        subsampling = jpeg.subsampling_of(pix_fmt) if self.jpeg_subsampling == "auto" else self.jpeg_subsampling
        return jpeg.decode(jpeg.encode(frames, self.jpeg_quality, subsampling))

    def clips(self, frames: np.ndarray) -> torch.Tensor:
        """Stored frames (T, H, W, 3) -> the test views (views, 3, T', S, S), float32, normalised."""
        views = self.clip_config.make_item(frames, 0, "", 0)["clips"]  # (V, F, H, W, 3)
        return self.transform.test(torch.from_numpy(np.ascontiguousarray(views[None])).to(self.device))

    def clips_of(self, path: str | Path) -> torch.Tensor:
        return self.clips(self.stored(path)[0])
