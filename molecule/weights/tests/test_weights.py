"""What a user of the converged host can observe: the staged model directory and its marker.

Converge copied the tiny-model test fixture from /srv/oneclick/bundle/tiny-model (the local
source) into /srv/oneclick/models/tiny-model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SOURCE = "/srv/oneclick/bundle/tiny-model"
DEST = "/srv/oneclick/models/tiny-model"
FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "weights" / "tiny-model"
STAGED = [
    "config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
]
CLUTTER = [".gitattributes", "original", "pytorch_model.bin", "oneclick-weights.json"]


def test_model_files_staged(host: Any) -> None:
    for name in STAGED:
        staged = host.file(f"{DEST}/{name}")
        expected = hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest()

        assert staged.is_file, f"{DEST}/{name} is missing"
        assert staged.sha256sum == expected, f"{DEST}/{name} differs from the source"
        assert staged.mode == 0o644, f"{DEST}/{name} has mode {staged.mode:o}, expected 644"
        assert staged.user == "root", f"{DEST}/{name} must be owned by root"


def test_directory_readable(host: Any) -> None:
    directory = host.file(DEST)

    assert directory.is_directory, f"{DEST} is not a directory"
    assert directory.mode == 0o755, f"{DEST} has mode {directory.mode:o}, expected 755"


def test_clutter_and_partials_absent(host: Any) -> None:
    for name in CLUTTER:
        assert not host.file(f"{DEST}/{name}").exists, f"{name} must not be staged"
    partials = host.run("find %s -name '*.incomplete'", DEST).stdout.split()
    assert not partials, f"partial files left behind: {partials}"


def test_marker_records_files(host: Any) -> None:
    marker_file = host.file(f"{DEST}/.oneclick-weights.json")
    assert marker_file.is_file, "the marker .oneclick-weights.json is missing"
    marker = json.loads(marker_file.content_string)
    listing = json.loads((FIXTURE / "oneclick-weights.json").read_text())
    expected = {entry["name"]: entry for entry in listing["files"]}

    assert marker["source"] == {"kind": "local", "path": SOURCE}, f"source {marker['source']}"
    assert sorted(entry["name"] for entry in marker["files"]) == STAGED, "marker file names"
    for entry in marker["files"]:
        assert entry["size"] == expected[entry["name"]]["size"], f"size of {entry['name']}"
        assert entry["sha256"] == expected[entry["name"]]["sha256"], f"sha256 of {entry['name']}"
    assert marker_file.mode == 0o644, f"the marker has mode {marker_file.mode:o}, expected 644"
