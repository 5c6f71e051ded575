"""TFLite / LiteRT: `lower` (litert-torch), `quantized` (dynamic-range int8 weights), `runner` (LiteRT interpreter)."""
