"""ExecuTorch: `lower` (XNNPACK-delegated .pte), `quantized` (PT2E, qd8 GEMMs), `runner`, `facts` (delegate graphs)."""
