"""The wheel carries the mapped packages and the device profiles; the editable install imports them."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_mapped_packages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("seqedge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for path in ["seqedge/__init__.py", "seqedge/exporters/__init__.py", "seqedge/runtimes/__init__.py",
                 "seqedge/ops/selective_scan/reference.py", "seqedge/ops/attention/reference.py",
                 "seqedge/cli/app.py"]:
        assert path in names, path
    for device in ("pixel8", "galaxy-s24", "iphone15pro", "raspberry-pi5", "jetson-orin-nano", "rtx4090"):
        assert f"seqedge/device_profiles/{device}.toml" in names, device
    for top, name in ((ROOT / "seqedge", "seqedge"), (ROOT / "exporters", "seqedge/exporters"),
                      (ROOT / "runtimes", "seqedge/runtimes")):  # every package folder (the package list is explicit)
        for init in top.rglob("__init__.py"):
            assert f"{name}/{init.relative_to(top).as_posix()}" in names, init
    native = ROOT / "runtimes" / "native"  # seqedge build-runner compiles these from the installed package
    for f in native.rglob("*"):
        if f.is_file() and f.suffix in (".cpp", ".h", ".txt", ".cmake", ".kt", ".mm", ".m", ".swift"):
            assert f"seqedge/runtimes/native/{f.relative_to(native).as_posix()}" in names, f
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"seqedge"}, top_level


def test_editable_install_maps_folders():
    import seqedge.exporters
    import seqedge.runtimes

    assert Path(seqedge.exporters.__file__).resolve().parent == ROOT / "exporters"
    assert Path(seqedge.runtimes.__file__).resolve().parent == ROOT / "runtimes"
    out = subprocess.run([sys.executable, "-c", "import exporters"], capture_output=True, cwd="/")
    assert out.returncode != 0  # no second top-level import name
