"""Exporters (installed as `seqedge.exporters`): one subpackage per format."""
