"""Benchmark: LoRA Studio's trainer against the guide's diffusers script (see bench/README.md)."""
