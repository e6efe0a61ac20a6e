"""Use a trained run on new videos: whole, in sliding windows, or as a stream (`vidpipe predict`)."""

from vidpipe.predict.frames import FrameReader, list_videos
from vidpipe.predict.predictor import Prediction, Predictor

__all__ = ["FrameReader", "Prediction", "Predictor", "list_videos"]
