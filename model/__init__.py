"""The neural model: vision tokenizer, causal transformer, diffusion head, samplers, losses,
configs and presets, checkpoint I/O, the streaming generator and training."""
