"""ExecuTorch exporter: one `.pte` with `prefill` and `decode` methods, lowered for XNNPACK or portable."""

BACKENDS = ("xnnpack", "portable")  # the delegates seqedge lowers ExecuTorch programs for
