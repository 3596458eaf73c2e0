"""Tests for the DCGM exporter stand-in test fixture (tests/fixtures/images/dcgm-exporter-standin).

Each test starts the server as a subprocess on a free loopback port with the
monitoring role's counters file, so no Docker engine is needed. `promtool check
metrics` checks the exposition format the way Prometheus would parse it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = (
    REPO_ROOT / "tests" / "fixtures" / "images" / "dcgm-exporter-standin" / "dcgm_standin.py"
)
COUNTERS_TEMPLATE = REPO_ROOT / "roles" / "monitoring" / "templates" / "dcgm-counters.csv.j2"
STARTUP_TIMEOUT_S = 10.0
GPU_UUIDS = (
    "GPU-3f1c2a4e-8b7d-4e21-9c53-0a6b1d2e7f10",
    "GPU-7a9e0b12-c4d5-4f6a-8b3c-91d2e3f4a5b6",
    "GPU-b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
    "GPU-e5f6a7b8-c9d0-4e1f-a2b3-c4d5e6f7a8b9",
)
EXPECTED_LINT_FINDINGS = {
    'counter metrics should have "_total" suffix',
    "label names should be written in 'snake_case' not 'camelCase'",
    "metric name should not include type 'counter'",
}
SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Standin:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def request(self, method: str, path: str) -> Response:
        request = urllib.request.Request(self.base_url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return Response(response.status, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, error.read())

    def metrics_text(self) -> str:
        response = self.request("GET", "/metrics")
        assert response.status == 200, f"/metrics returned {response.status}"
        return response.body.decode()

    def samples(self) -> list[Sample]:
        parsed: list[Sample] = []
        for line in self.metrics_text().splitlines():
            match = SAMPLE.match(line)
            if match is None:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            parsed.append(Sample(match["name"], labels, float(match["value"])))
        return parsed

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=10)
        return output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def counters_file(directory: Path) -> Path:
    """Write the role's counters file without its ansible_managed header line."""
    lines = COUNTERS_TEMPLATE.read_text().splitlines()
    assert lines[0].startswith("{{ ansible_managed"), "the template's first line changed"
    path = directory / "counters.csv"
    path.write_text("\n".join(lines[1:]) + "\n")
    return path


def counter_fields(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line.split(",")[0] for line in lines if line and not line.startswith("#")]


def start(arguments: list[str], env: dict[str, str] | None = None) -> Standin:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "-a", f"127.0.0.1:{port}", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"NODE_NAME": "appliance", **(env or {})},
    )
    standin = Standin(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the stand-in exited with {process.returncode}:\n{standin.stop()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return standin
        except OSError:
            time.sleep(0.1)
    output = standin.stop()
    pytest.fail(f"the stand-in did not listen within {STARTUP_TIMEOUT_S} s:\n{output}")


@pytest.fixture
def counters(tmp_path: Path) -> Path:
    return counters_file(tmp_path)


@pytest.fixture
def standin(counters: Path) -> Iterator[Standin]:
    server = start(["-f", str(counters)])
    yield server
    server.stop()


def test_exports_every_counter_for_four_gpus(standin: Standin, counters: Path) -> None:
    samples = standin.samples()
    names = {sample.name for sample in samples}

    for field in counter_fields(counters):
        assert field in names, f"{field} from the counters file is not exported"
        gpus = sorted(sample.labels["gpu"] for sample in samples if sample.name == field)
        assert gpus == ["0", "1", "2", "3"], f"{field} is exported for GPUs {gpus}"


def test_series_carry_exporter_labels(standin: Standin) -> None:
    temperatures = [s for s in standin.samples() if s.name == "DCGM_FI_DEV_GPU_TEMP"]

    for sample in temperatures:
        index = int(sample.labels["gpu"])
        assert sample.labels["UUID"] == GPU_UUIDS[index], f"wrong UUID in {sample}"
        assert sample.labels["modelName"] == "NVIDIA A100-SXM4-80GB", f"wrong model in {sample}"
        assert sample.labels["Hostname"] == "appliance", "Hostname must come from NODE_NAME"
        assert sample.labels["device"] == f"nvidia{index}", f"wrong device in {sample}"
        assert 0 < sample.value < 85, f"a recorded temperature must not fire alerts: {sample}"


def test_only_listed_counters_exported(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text(
        "# two fields\nDCGM_FI_DEV_GPU_TEMP, gauge, Temperature.\n"
        "DCGM_FI_DEV_XID_ERRORS, gauge, Last Xid.\n"
    )
    server = start(["-f", str(path)])
    try:
        names = {sample.name for sample in server.samples()}
    finally:
        server.stop()

    assert names == {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS"}, f"exported {names}"


def test_output_passes_promtool_lint(standin: Standin, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed. Install it with `apt-get install -y prometheus`.",
            pytrace=False,
        )
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=standin.metrics_text(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    findings = {line.split(" ", 1)[1] for line in result.stderr.splitlines() if " " in line}

    # The real exporter's DCGM field names and its labels (UUID, modelName, Hostname) draw these
    # naming findings too, so they are expected; anything else is a format error.
    assert "error while linting" not in result.stderr, f"unparsable output:\n{result.stderr}"
    assert findings <= EXPECTED_LINT_FINDINGS, (
        f"unexpected findings: {findings - EXPECTED_LINT_FINDINGS}"
    )


def test_xid_fault_sets_one_gpu(standin: Standin) -> None:
    response = standin.request("POST", "/fault/xid?gpu=1&value=79")
    xids = {
        s.labels["gpu"]: s.value for s in standin.samples() if s.name == "DCGM_FI_DEV_XID_ERRORS"
    }

    assert response.status == 200, f"POST /fault/xid returned {response.status}"
    assert response.json()["fields"] == {"1": {"DCGM_FI_DEV_XID_ERRORS": 79.0}}, response.json()
    assert xids == {"0": 0, "1": 79, "2": 0, "3": 0}, f"Xid values {xids}"


def test_lost_gpu_and_reset(standin: Standin) -> None:
    lost = standin.request("POST", "/fault/lost?gpu=3")
    gpus_while_lost = {s.labels["gpu"] for s in standin.samples()}
    reset = standin.request("POST", "/fault/reset")
    gpus_after_reset = {s.labels["gpu"] for s in standin.samples()}

    assert lost.status == 200, f"POST /fault/lost returned {lost.status}"
    assert gpus_while_lost == {"0", "1", "2"}, f"GPU 3 must vanish, got {gpus_while_lost}"
    assert reset.json() == {"fields": {}, "lost": []}, f"reset left faults: {reset.json()}"
    assert gpus_after_reset == {"0", "1", "2", "3"}, f"reset must restore GPU 3: {gpus_after_reset}"


def test_field_fault_sets_any_field(standin: Standin) -> None:
    response = standin.request(
        "POST", "/fault/field?gpu=0&name=DCGM_FI_DEV_ECC_DBE_VOL_TOTAL&value=2"
    )
    values = {
        s.labels["gpu"]: s.value
        for s in standin.samples()
        if s.name == "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
    }

    assert response.status == 200, f"POST /fault/field returned {response.status}"
    assert values["0"] == 2, f"double-bit ECC count of GPU 0 is {values['0']}"
    assert values["1"] == 0, "other GPUs must keep their values"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/fault/xid?gpu=7&value=79", "gpu must be a GPU index from 0 to 3"),
        ("/fault/xid?gpu=1&value=x", "value must be a number"),
        ("/fault/field?gpu=1&name=TEMP&value=1", "name must be a DCGM field"),
    ],
)
def test_invalid_fault_rejected(standin: Standin, path: str, message: str) -> None:
    response = standin.request("POST", path)

    assert response.status == 400, f"POST {path} returned {response.status}"
    assert message in response.json()["error"], f"unexpected error {response.json()}"
    assert standin.request("GET", "/fault").json() == {"fields": {}, "lost": []}, (
        "a rejected request must not set a fault"
    )


def test_counters_increase(standin: Standin) -> None:
    def energy() -> float:
        samples = standin.samples()
        return next(
            s.value
            for s in samples
            if s.name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" and s.labels["gpu"] == "0"
        )

    first = energy()
    time.sleep(0.3)
    second = energy()

    assert second > first, f"the energy counter must grow: {first} then {second}"


def test_startup_xid_from_environment(counters: Path) -> None:
    server = start(["-f", str(counters)], {"STANDIN_XID": "2:48"})
    try:
        xids = {
            s.labels["gpu"]: s.value for s in server.samples() if s.name == "DCGM_FI_DEV_XID_ERRORS"
        }
    finally:
        server.stop()

    assert xids["2"] == 48, f"STANDIN_XID=2:48 must set GPU 2's Xid, got {xids}"


def test_invalid_counters_file_exits(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("DCGM_FI_DEV_GPU_TEMP, histogram, Temperature.\n")
    result = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "-f", str(path), "-a", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert result.returncode == 2, f"an invalid counters file must exit 2, got {result.returncode}"
    assert "unknown type 'histogram'" in result.stdout, f"unexpected output {result.stdout}"
