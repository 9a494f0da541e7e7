"""Benchmark helpers shared by `seqedge bench`, the host profile and the speed suite."""
