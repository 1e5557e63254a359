"""dfm: Data Fine-tuning in JAX."""
