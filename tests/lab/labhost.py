"""Throwaway lab hosts: Debian 12 containers that stand in for a fresh appliance.

Used by the end-to-end tests and by `make lab-up`. A lab host runs systemd as
PID 1 and gets its own Docker engine when oneclick installs one. It has no
GPU, so the lab configuration sets `gpu.required: false` and serves the
serving stand-in image (a test fixture) in place of vLLM.

Run `python tests/lab/labhost.py up` to install the appliance into a new lab
host and print its endpoint, `down` to remove every lab host.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aptrepo
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("ONECLICK_LAB_BASE_IMAGE", "oneclick-lab/debian12-systemd:latest")
STANDIN_IMAGE = "oneclick-fixture/serving-standin:test"
LAB_LABEL = "io.oneclick.lab"
# Lab hosts are labelled with the checkout that made them, so that `down`
# never removes another checkout's lab hosts on a shared engine.
LAB_OWNER = str(REPO_ROOT)
IMAGES_DIR = "/srv/oneclick/images"
TOOLKIT_REPO_DIR = "/srv/oneclick/apt-nvidia-container-toolkit"
TOOLKIT_PACKAGES = (
    Path(__file__).resolve().parents[1] / "fixtures" / "packages" / "nvidia-container-toolkit"
)
WEIGHTS_DIR = "/srv/oneclick/models/lab-model"
LAB_DIR = REPO_ROOT / ".lab"

# The capabilities that let systemd and a nested Docker engine run. The lab
# machine's bounding set lacks CAP_SYS_RESOURCE, so --privileged and
# --cap-add ALL fail there; the same list is in .config/molecule/config.yml.
CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
)


def docker(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a docker CLI command on the lab machine's engine."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def host_exec(name: str, command: str, check: bool = True, timeout: float = 120) -> str:
    """Run a shell command inside the lab host and return its standard output."""
    result = docker("exec", name, "sh", "-c", command, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{command}` failed in {name} (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def owner(name: str) -> str | None:
    """Return the checkout that made the container ``name``, or None if it does not exist."""
    label_format = f'{{{{index .Config.Labels "{LAB_LABEL}"}}}}'
    result = docker("inspect", "-f", label_format, name, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def create(name: str, network: str | None = None, mounts: tuple[str, ...] = ()) -> str:
    """Start a fresh lab host named ``name`` and wait until systemd is up.

    ``network`` "none" makes an air-gapped host; ``mounts`` are extra
    ``-v`` specifications, such as an offline bundle at the same path.
    """
    current = owner(name)
    if current is not None and current != LAB_OWNER:
        raise RuntimeError(
            f"a container named {name} exists and this checkout's lab did not make it "
            f"(label {LAB_LABEL}={current!r}); pick another name with --name"
        )
    remove(name)
    args = [
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--label",
        f"{LAB_LABEL}={LAB_OWNER}",
        "--cgroupns=host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--tmpfs",
        "/tmp",
        # The appliance's own engine needs a real filesystem for overlay2.
        "-v",
        "/var/lib/docker",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
    ]
    for capability in CAPABILITIES:
        args += ["--cap-add", capability]
    if network is not None:
        args += ["--network", network]
    for mount in mounts:
        args += ["-v", mount]
    docker(*args, BASE_IMAGE, "/lib/systemd/systemd")

    deadline = time.monotonic() + 120
    state = ""
    while time.monotonic() < deadline:
        state = host_exec(name, "systemctl is-system-running || true").strip()
        if state in ("running", "degraded"):
            return address(name)
        time.sleep(1)
    raise RuntimeError(f"systemd in {name} did not start within 120 s (state: {state!r})")


def wait_healthy(name: str, container: str = "oneclick-serving", timeout_s: float = 120) -> str:
    """Wait until ``container`` inside the lab host is healthy; return its last health status."""
    deadline = time.monotonic() + timeout_s
    health = ""
    while time.monotonic() < deadline:
        health = host_exec(
            name, f"docker inspect -f '{{{{.State.Health.Status}}}}' {container}"
        ).strip()
        if health == "healthy":
            break
        time.sleep(2)
    return health


def address(name: str) -> str:
    """Return the lab host's address on the lab machine's Docker bridge."""
    return docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    ).stdout.strip()


def remove(name: str) -> None:
    """Remove the lab host ``name`` and its volumes, if it exists."""
    docker("rm", "-f", "-v", name, check=False)


def remove_all() -> list[str]:
    """Remove every lab host this checkout made; return their names."""
    names = docker(
        "ps", "-a", "--filter", f"label={LAB_LABEL}={LAB_OWNER}", "--format", "{{.Names}}"
    )
    removed = names.stdout.split()
    for name in removed:
        remove(name)
    return removed


def archive_name(image: str) -> str:
    """Return the file name the inference role expects for ``image``'s archive."""
    return "".join("_" if char in "/:@" else char for char in image) + ".tar"


def write_test_weights(directory: Path) -> Path:
    """Write a tiny stand-in model directory (a test fixture): the files a
    real checkpoint has, one shard of a few bytes, which the stand-in engine
    never reads."""
    directory.mkdir(parents=True, exist_ok=True)
    shard = "model-00001-of-00001.safetensors"
    (directory / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}),
        encoding="utf-8",
    )
    (directory / shard).write_bytes(b"oneclick lab stand-in weights\n" * 64)
    index = {"metadata": {"total_size": 1984}, "weight_map": {"lm_head.weight": shard}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return directory


def stage_fixtures(name: str, work_dir: Path) -> None:
    """Copy the fixtures into the host: the serving stand-in image archive, small
    test weights, and a local APT repository of stand-in NVIDIA toolkit packages."""
    work_dir.mkdir(parents=True, exist_ok=True)
    repo = work_dir / "apt-nvidia-container-toolkit"
    if not (repo / "Packages").exists():
        sources = sorted(
            path for path in (TOOLKIT_PACKAGES / "1.17.8-1").iterdir() if path.is_dir()
        )
        aptrepo.build_repo(repo, sources)
    host_exec(name, f"mkdir -p {Path(TOOLKIT_REPO_DIR).parent}")
    docker("cp", str(repo), f"{name}:{TOOLKIT_REPO_DIR}")
    archive = work_dir / archive_name(STANDIN_IMAGE)
    if not archive.exists():
        docker("save", "-o", str(archive), STANDIN_IMAGE, timeout=600)
    host_exec(name, f"mkdir -p {IMAGES_DIR} {Path(WEIGHTS_DIR).parent}")
    docker("cp", str(archive), f"{name}:{IMAGES_DIR}/{archive.name}", timeout=600)
    weights = write_test_weights(work_dir / "lab-model")
    docker("cp", str(weights), f"{name}:{WEIGHTS_DIR}")


def inventory(name: str) -> dict[str, Any]:
    """Return an inventory that reaches the lab host through `docker exec`."""
    return {
        "appliance": {
            "hosts": {
                name: {
                    "ansible_connection": "community.docker.docker",
                    "ansible_host": name,
                    "ansible_user": "root",
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
            }
        }
    }


def lab_config(bind_address: str = "0.0.0.0", **engine: Any) -> dict[str, Any]:
    """Return an appliance configuration for a lab host without GPUs."""
    return {
        "model": {
            "id": "lab/stand-in-model",
            "served_name": "lab-model",
            "weights_path": WEIGHTS_DIR,
            "tensor_parallel_size": 1,
        },
        "engine": {"image": STANDIN_IMAGE, "ready_timeout": 120, **engine},
        "api": {"bind_address": bind_address, "port": 8000},
        "gpu": {"required": False, "count": 1},
        "docker": {"daemon_config": {"live-restore": True}},
        "disk": {"docker_min_free_gb": 1, "weights_min_free_gb": 1},
        # stage_fixtures puts the stand-in weights in place.
        "weights": {"source": "present"},
        # NVIDIA's toolkit comes from stand-in packages (test fixtures) in a
        # local repository; Debian's driver packages from the Debian mirror.
        "sources": {
            "images": {"mode": "local", "local_path": IMAGES_DIR},
            "package_overrides": {
                "nvidia_container_toolkit": {"mode": "local", "local_path": TOOLKIT_REPO_DIR}
            },
        },
        # A container must never be rebooted by the driver role.
        "nvidia": {"allow_reboot": False},
        # Grafana's repository is unreachable from the lab; its own Molecule
        # scenario installs a stand-in package instead.
        "features": {"grafana": False},
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def up(name: str) -> int:
    """Create a lab host, install the appliance into it and print the endpoint."""
    print(f"[lab] creating lab host {name} from {BASE_IMAGE}", flush=True)
    ip = create(name)
    stage_fixtures(name, LAB_DIR / "images")
    inventory_path = write_yaml(LAB_DIR / "hosts.yml", inventory(name))
    config_path = write_yaml(LAB_DIR / "appliance.yml", lab_config())
    print(f"[lab] running: oneclick install -i {inventory_path} -c {config_path}", flush=True)
    result = subprocess.run(
        ["oneclick", "install", "-i", str(inventory_path), "-c", str(config_path)], check=False
    )
    if result.returncode != 0:
        print(f"[lab] oneclick install failed with exit code {result.returncode}", flush=True)
        return result.returncode
    print(
        f"\n[lab] endpoint: http://{ip}:8000/v1 (model 'lab-model', served by the stand-in), "
        "reachable from this machine only\n"
        f'[lab] try: curl -H "Authorization: Bearer $(docker exec {name} cat '
        f'/etc/oneclick/api-key)" http://{ip}:8000/v1/models\n'
        f"[lab] status: .venv/bin/oneclick status -i {inventory_path} -c {config_path}\n"
        f"[lab] remove it with: make lab-down",
        flush=True,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--name", default="oneclick-lab", help="lab host container name")
    arguments = parser.parse_args()
    if arguments.action == "up":
        return up(arguments.name)
    removed = remove_all()
    shutil.rmtree(LAB_DIR, ignore_errors=True)
    print(f"[lab] removed: {', '.join(removed) or 'no lab host'}, and {LAB_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
