"""Build stand-in Debian packages and a flat APT repository from them.

The lab cannot reach NVIDIA's or Grafana's APT repositories, so tests build
packages of the same names from source trees under tests/fixtures/packages/
(each a package root with DEBIAN/control) and serve them from a directory
repository, which roles add as `deb [trusted=yes] file:<dir> ./`. These
packages are test fixtures: they install stand-in programs, never the real
software.

Usage: python tests/lab/aptrepo.py OUTPUT_DIR PACKAGE_DIR [PACKAGE_DIR ...]
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "packages"


def build_package(source: Path, output_dir: Path) -> Path:
    """Build the package whose root is ``source`` into ``output_dir``; return the .deb."""
    if not (source / "DEBIAN" / "control").is_file():
        raise FileNotFoundError(f"{source}: missing DEBIAN/control")
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        # Copy first so that build-time mode fixes never touch the checkout.
        root = Path(scratch) / source.name
        shutil.copytree(source, root, symlinks=True)
        for script in ("preinst", "postinst", "prerm", "postrm"):
            path = root / "DEBIAN" / script
            if path.exists():
                path.chmod(0o755)
        result = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(root), str(output_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"dpkg-deb failed for {source}: {result.stderr.strip()}")
    # dpkg-deb prints: dpkg-deb: building package 'name' in 'path'.
    built = result.stdout.strip().rsplit("'", 2)[-2]
    return Path(built)


def build_repo(output_dir: Path, sources: list[Path]) -> list[Path]:
    """Build every package in ``sources`` into a flat repository at ``output_dir``."""
    debs = [build_package(source, output_dir) for source in sources]
    index = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=output_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (output_dir / "Packages").write_text(index, encoding="utf-8")
    with gzip.open(output_dir / "Packages.gz", "wt", encoding="utf-8") as handle:
        handle.write(index)
    return debs


def main(arguments: list[str]) -> int:
    if len(arguments) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    output_dir = Path(arguments[0])
    sources = [Path(item) for item in arguments[1:]]
    for deb in build_repo(output_dir, sources):
        print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
