"""Core ML: `lower` (coremltools ML program), `quantized` (W8A8, int4, 6-bit palettes), `program` (reads a saved
package's weights back), `runner` (macOS only)."""
