"""Passes that make a model smaller: structured pruning, token compression, ED-ViT splitting, MatFormer extraction."""
