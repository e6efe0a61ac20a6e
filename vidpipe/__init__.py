"""vidpipe: decode videos once into sharded stores, then train video models many times."""

__version__ = "0.1.0"
