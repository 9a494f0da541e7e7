#!/usr/bin/env python3
"""A stand-in `adb` for tests: the device is a folder on this host ($FAKE_ADB_ROOT stands for
/data/local/tmp), attached serials are $FAKE_ADB_SERIALS. `push` copies, `shell` runs the command with
sh in that world, `get-state` answers like adb. Every call is appended to $FAKE_ADB_ROOT/calls.log.
An arm64 device: $FAKE_ADB_ARCH=aarch64 is what `uname -m` answers, and $FAKE_ADB_EMULATOR (a command prefix,
`qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu`) runs each program the shell starts that is an
ELF file, so the aarch64 runner really runs."""

import os
import shlex
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
    command = local(args[1])
    emulator = os.environ.get("FAKE_ADB_EMULATOR")
    if emulator:  # `env VAR=... PROGRAM ARGS` or `PROGRAM ARGS`: put the emulator in front of an ELF program
        argv = shlex.split(command)
        i = 1 if argv[:1] == ["env"] else 0
        while i < len(argv) and argv[0] == "env" and "=" in argv[i]:
            i += 1
        if i < len(argv) and os.path.isfile(argv[i]) and open(argv[i], "rb").read(4) == b"\x7fELF":
            # qemu-user takes the library path from the environment it is given: pass it through -E
            env = [a for a in argv[1:i]] if argv[0] == "env" else []
            prefix = shlex.split(emulator) + [x for e in env for x in ("-E", e)]
            command = shlex.join(prefix + argv[i:])
    proc = subprocess.run(["sh", "-c", command], capture_output=True)
    sys.stdout.buffer.write(proc.stdout)
    sys.stderr.buffer.write(proc.stderr)
    sys.exit(proc.returncode)
else:
    print(f"fake adb: unsupported command {args[0]}", file=sys.stderr)
    sys.exit(1)
