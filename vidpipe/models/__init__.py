"""Models: one architecture per file, one registry (`vidpipe.models.registry`)."""

from vidpipe.models import perceiver, r2plus1d, retnet, temporal_vit, tsn_mean  # noqa: F401  (register)
from vidpipe.models.registry import count_params, create_model, list_models, model_entry  # noqa: F401
