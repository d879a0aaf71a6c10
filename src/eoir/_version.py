"""The package version (one home; read by ``eoir.__version__``, checkpoints and packaging)."""

__version__ = "0.1.0"
