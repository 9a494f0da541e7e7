"""More fuzzing than the suite runs: tests/test_untrusted.py's fuzz tests (manifest.json, config.json, profile
TOML, numeric CLI options) with N generated cases each, then the table of outcomes per input kind.

    .venv/bin/python benchmarks/fuzz.py --examples 5000

Every case must exit 0 or 2 without a traceback, read nothing outside its folders, write nothing, and run
nothing an input named (tests/test_untrusted.py::invoke); the table counts what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("tried", "crashed", "read outside", "wrote", "ran something it named", "exit 0", "exit 2")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=5000, help="generated cases per fuzz test")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {**os.environ, "SEQEDGE_FUZZ_EXAMPLES": str(args.examples), "SEQEDGE_FUZZ_REPORT": str(report)}
        t0, load = time.time(), os.getloadavg()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "test_untrusted.py"), "-k", "fuzzed"], cwd=ROOT, env=env)
        outcomes = json.loads(report.read_text()) if report.is_file() else {}
    print(f"\n{args.examples} examples per test, {time.time() - t0:.0f} s, load average {load[0]:.2f} at the start")
    print("| input | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for kind, counts in outcomes.items():
        print(f"| {kind} | " + " | ".join(str(counts.get(c, 0)) for c in COLUMNS) + " |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
