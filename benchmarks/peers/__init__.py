"""Official implementations the benchmarks and the parity tests measure edgevit against (peers, not package code)."""
