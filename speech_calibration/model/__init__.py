"""Qwen2-Audio: loading (base, LoRA adapter), input building, the shared forward pass, scoring, training, the tiny model."""
