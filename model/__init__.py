"""The neural model: vision tokenizer, causal transformer, diffusion head, samplers, losses,
configs and presets, checkpoint I/O, the streaming generator and training.

Public entry point: :func:`load_generator` (see DESIGN.md)."""

from model.generator import Generator, StreamSession, load_generator

__all__ = ["Generator", "StreamSession", "load_generator"]
