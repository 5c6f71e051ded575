"""Quantization passes over torch modules (a leaf: never imports edgevit)."""
