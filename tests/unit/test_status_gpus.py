"""GPU details in `oneclick status`, rebuilt from nvidia-smi runs a playbook recorded."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from oneclick.cli.render import print_gpus, print_monitoring
from oneclick.gpu import NoGpuReason, inventory_from_report

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"


def _recorded(name: str) -> dict[str, object]:
    return {"rc": 0, "stdout": (FIXTURES / name).read_text(encoding="utf-8"), "stderr": ""}


def _render(host: str, commands: dict[str, dict[str, object]]) -> str:
    console = Console(record=True, width=200)
    print_gpus(console, host, inventory_from_report(commands))
    return console.export_text()


def test_report_with_four_a100() -> None:
    inventory = inventory_from_report(
        {
            "xml": _recorded("q-x-4x-a100-sxm4-80gb.xml"),
            "compute_cap": _recorded("query-compute-cap-4x-a100.csv"),
        }
    )
    assert inventory.count == 4
    assert {gpu.compute_capability for gpu in inventory.gpus} == {(8, 0)}
    assert inventory.healthy


def test_report_without_nvidia_smi() -> None:
    missing = {"rc": 127, "stdout": "", "stderr": "[Errno 2] No such file or directory"}
    inventory = inventory_from_report({"xml": missing, "compute_cap": missing})
    assert inventory.count == 0
    assert inventory.reason_code == NoGpuReason.NO_DRIVER
    assert "Install the NVIDIA driver" in inventory.reason


def test_render_lists_gpus_and_problems() -> None:
    text = _render(
        "gpu-node",
        {"xml": _recorded("q-x-2x-a100-remap-failure-dbe.xml"), "compute_cap": {"rc": 6}},
    )
    assert "gpu-node: GPUs" in text
    assert "A100" in text
    assert "failed to remap a memory row" in text, "health problems must be shown"


def test_render_without_gpu_gives_reason() -> None:
    missing = {"rc": 127, "stdout": "", "stderr": "No such file or directory"}
    text = _render("lab", {"xml": missing, "compute_cap": missing})
    assert text.startswith("lab: no GPU read: No working NVIDIA driver")


def test_render_monitoring_targets_and_alerts() -> None:
    report = {
        "endpoints": {
            "prometheus": "http://127.0.0.1:9090/-/ready",
            "alertmanager": "http://127.0.0.1:9093/-/ready",
        },
        "ready": ["prometheus"],
        "targets": {"vllm": "down", "node": "up"},
        "target_errors": {"vllm": "connection refused"},
        "alerts": [{"alertname": "VllmEndpointDown", "severity": "critical"}],
    }
    console = Console(record=True, width=200)
    print_monitoring(console, "gpu-node", report)
    text = console.export_text()

    assert "gpu-node: monitoring" in text
    assert "alertmanager" in text
    assert "not ready" in text, "alertmanager is not in the ready list"
    assert "scrape target vllm: down (connection refused)" in text
    assert "scrape target node: up" in text
    assert "alert VllmEndpointDown firing: severity=critical" in text
