"""Compression benchmark: pruning, token compression, ED-ViT and MatFormer against their peers, side by side."""
