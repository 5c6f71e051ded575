"""edgevit: shrink vision transformers and ship them to phones and boards."""

__version__ = "0.1.0"
