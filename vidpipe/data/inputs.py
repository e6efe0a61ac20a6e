"""What a model is given, and how it is cut from a store: one `InputSpec`.

`build_data` makes it once for a run and derives every loader and device transform from it; the run
card records it in every checkpoint, and eval, predict and export rebuild their inputs from that record
with the same methods. A setting added to the augmentation reaches all of them, or none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vidpipe.data.augment import AugmentConfig
from vidpipe.data.sampling import Sampling
from vidpipe.errors import VidpipeError
from vidpipe.io.decode import ClipSpec

KINDS = ("frame_features", "clip_tokens", "clips")


@dataclass(frozen=True)
class InputSpec:
    kind: str  # frame_features | clip_tokens | clips (the model's registry entry says which)
    clip: dict  # the stored frames inputs are cut from: store.json's clip entry (size, mode, fps, codec)
    decoder: str | None = None  # what decoded the store's videos: pyav | ffmpeg | dali (None: not recorded)
    train: str | None = None  # Sampling names: "1x1x8" (TSN segments) or "16x4x1" (dense clips); None: every stored clip
    test: str | None = None
    augment: dict | None = None  # clips: the AugmentConfig (crop, test resize and crops, mean/std, ...)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise VidpipeError(f"input kind must be one of {', '.join(KINDS)}; got {self.kind!r}")

    def sampling(self, train: bool) -> Sampling | None:
        name = self.train if train else self.test
        return Sampling.parse(name) if name else None

    def augment_config(self) -> AugmentConfig:
        if self.augment is None:
            raise VidpipeError(f"{self.kind} inputs have no spatial transform; only clip models do")
        return AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()})

    def clip_spec(self) -> ClipSpec:
        """The decode that makes a new video into the store's frames (predict)."""
        c = self.clip
        return ClipSpec(c["frames"], c["height"], c["width"], c.get("fps"), c.get("max_seconds"))

    @property
    def jpeg_quality(self) -> int | None:
        """Stores of JPEG frames: the quality a new video's frames go through to match them."""
        return self.clip.get("jpeg_quality") if self.clip.get("codec") == "jpeg" else None

    @property
    def crop(self) -> int | None:
        return self.augment["size"] if self.augment else None

    def with_views(self, clips: int | None = None, crops: int | None = None, flag: str = "--views") -> "InputSpec":
        """Test-time views other than the run's: `clips` dense clips per video (set by `flag`), `crops` (1 or 3)
        spatial crops."""
        spec = self
        if clips is not None:
            s = self.sampling(train=False)
            if s.is_tsn and clips != 1:
                raise VidpipeError(f"{flag} applies to dense clips; this model samples {s.num_clips} TSN segments per video")
            if not s.is_tsn:
                spec = dataclasses.replace(spec, test=Sampling(s.clip_len, s.frame_interval, clips).name)
        if crops is not None:
            spec = dataclasses.replace(spec, augment={**spec.augment, "test_crop": "three" if crops == 3 else "center"})
        return spec

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise VidpipeError(f"a run's input record has unknown fields {unknown}; it was written by a newer vidpipe")
        return cls(**d)

    @classmethod
    def from_v1(cls, inputs: dict, provenance: dict, test_crops: int) -> "InputSpec":
        """The `inputs` record of checkpoints written before the run card (vidpipe at ea7e36e and earlier):
        clips kept their crop, test resize and mean/std, and every other augmentation setting was its default."""
        kind, clip = inputs["kind"], provenance["clip"]
        if kind == "clips":
            augment = AugmentConfig(size=inputs["crop"], test_short_side=inputs["test_short_side"], mean=tuple(inputs["mean"]),
                                    std=tuple(inputs["std"]), test_crop="three" if test_crops == 3 else "center")
            return cls(kind, clip, None, inputs["train"], inputs["test"], dataclasses.asdict(augment))
        sampling = inputs["sampling"] if kind == "frame_features" else None
        return cls(kind, clip, None, sampling, sampling)

    def describe(self) -> str:
        if self.kind == "clip_tokens":
            return "every stored clip's token maps"
        if self.kind == "frame_features":
            return f"TSN {self.sampling(False).num_clips} segments of the stored features"
        a = self.augment
        return f"train {self.train}, test {self.test}, crop {a['size']} (test: short side {a['test_short_side']}, {a['test_crop']})"
