#!/usr/bin/env python3
"""A stand-in `adb` for tests: the device is a folder on this host ($FAKE_ADB_ROOT stands for
/data/local/tmp), attached serials are $FAKE_ADB_SERIALS. `push` copies, `shell` runs the command with
bash in that world, `get-state` answers like adb. Every call is appended to $FAKE_ADB_ROOT/calls.log."""

import os
import shutil
import subprocess
import sys

args = sys.argv[1:]
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
root = os.environ["FAKE_ADB_ROOT"]
with open(os.path.join(root, "calls.log"), "a") as log:
    log.write(" ".join(args) + "\n")
if serial not in os.environ.get("FAKE_ADB_SERIALS", "").split(","):
    print(f"error: device '{serial}' not found", file=sys.stderr)
    sys.exit(1)


def local(path: str) -> str:
    return path.replace("/data/local/tmp", root)


if args[0] == "get-state":
    print("device")
elif args[0] == "push":
    dest = local(args[2])
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(args[1], dest)
    print(f"{args[1]}: 1 file pushed")
elif args[0] == "shell" and args[1:] == ["uname -m"]:
    print(os.environ.get("FAKE_ADB_ARCH", os.uname().machine))  # the stand-in device's CPU: this host's
elif args[0] == "shell":
    proc = subprocess.run(["sh", "-c", local(args[1])], capture_output=True)
    sys.stdout.buffer.write(proc.stdout)
    sys.stderr.buffer.write(proc.stderr)
    sys.exit(proc.returncode)
else:
    print(f"fake adb: unsupported command {args[0]}", file=sys.stderr)
    sys.exit(1)
