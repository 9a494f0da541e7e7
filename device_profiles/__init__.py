"""Device profiles (`*.toml`), shipped as package data; loaded and validated by `seqedge.profiles`."""
