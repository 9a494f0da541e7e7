"""ExecuTorch exporter: one `.pte` with `prefill` and `decode` methods, lowered for XNNPACK or portable."""
