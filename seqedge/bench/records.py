"""One benchmark figure: what was measured or projected, how, and with which inputs.

Every figure `seqedge bench` reports is a `Record` whose `kind` says how it was obtained:

    measured-host    timed on this machine through the artifact's runtime adapter, in a child process
    projected        the calibrated roofline for the device profile (bench/roofline.py), not a measurement
    measured-device  timed on an attached device by the native runner over adb (bench/device.py)
    measured-peer    a peer system (llama.cpp, ...) timed on this machine in the same run (bench/peers.py)

and its `provenance` says where it comes from: the samples and statistic of a measurement, or the fit,
points and estimates a projection rests on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("measured-host", "projected", "measured-device", "measured-peer")


@dataclass(frozen=True)
class Record:
    target: str
    kind: str
    metric: str  # prefill_tok_s | decode_tok_s | decode_ms | decode_ms_p50 | ... (bench/report.py METRICS)
    value: float
    unit: str
    inputs: dict[str, Any] = field(default_factory=dict)  # prompt_tokens / context, runtime, device, method terms
    provenance: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"record kind {self.kind!r} is not one of {KINDS}")
        if not self.provenance:
            raise ValueError(f"record {self.metric} of {self.target} has no provenance")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def at(self) -> int | None:
        """The length this figure is for (prompt tokens for prefill/TTFT, context for decode)."""
        return self.inputs.get("prompt_tokens", self.inputs.get("context"))
