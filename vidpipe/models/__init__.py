"""Models: one architecture per file, one registry (`vidpipe.models.registry`), weights records
(`vidpipe.models.weights`). Build with `create_model` (random init, no I/O), load with `load_pretrained`."""

from vidpipe.models import perceiver, r2plus1d, r2plus1d_perceiver, retnet, squeezetime, temporal_vit, timesformer, timesformer_retnet, tin, tsm, tsn_mean, vivit  # noqa: F401  (register)
from vidpipe.models.registry import (count_params, create_model, init_from_pretrained, list_models, load_pretrained,  # noqa: F401
                                     make_config, model_entry)
