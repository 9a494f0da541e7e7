"""Runtime adapters (installed as `seqedge.runtimes`)."""
