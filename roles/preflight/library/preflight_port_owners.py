#!/usr/bin/python
"""Ansible module that finds the processes and containers using some TCP ports."""

from __future__ import annotations

import os
import re
import subprocess
from typing import TypedDict

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: preflight_port_owners
short_description: Report which TCP ports are free, counting our own containers as free
description:
  - Lists listening TCP sockets with C(ss -ltnpH) and, when the docker CLI is present and
    the engine responds, the running containers with the host ports they publish.
  - A port counts as free when nothing listens on it and no container publishes it, or when
    everything on it belongs to one of O(owned_containers). A listener belongs to a container
    when its process runs in that container's cgroup (host networking), or when it is a
    C(docker-proxy) (or a process ss could not name) and that container publishes the port.
  - Reads only; it never changes the host.
options:
  ports:
    description: TCP ports to check.
    type: list
    elements: int
    required: true
  owned_containers:
    description: Names of containers whose use of a port does not count as a conflict.
    type: list
    elements: str
    default: []
  command_timeout:
    description: Seconds to wait for ss and for docker ps.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Find what holds the serving port
  preflight_port_owners:
    ports: [8000]
    owned_containers: [oneclick-serving]
  register: __preflight_ports
"""

RETURN = r"""
ports:
  description: One entry per requested port, in the order given.
  type: list
  elements: dict
  returned: always
  sample:
    - port: 8000
      free: false
      owned_by: []
      holders: ['python3 (pid 4242) on 127.0.0.1']
error:
  description: Why the listeners could not be listed; empty when ss ran.
  type: str
  returned: always
"""

CONTAINER_ID_PATTERN = re.compile(r"[0-9a-f]{64}")
SS_PROCESS_PATTERN = re.compile(r'\("([^"]*)",pid=(\d+)')


class Listener(TypedDict):
    address: str
    port: int
    process: str
    pid: int


class Container(TypedDict):
    id: str
    name: str
    host_ports: list[int]


class PortState(TypedDict):
    port: int
    free: bool
    owned_by: list[str]
    holders: list[str]


def parse_ss_listeners(text: str) -> list[Listener]:
    """Parse `ss -ltnpH` output into one entry per listening socket and process.

    A socket shared by several processes yields one entry each. Without root, ss prints no
    users column, and the entry gets process "" and pid 0.
    """
    listeners: list[Listener] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or ":" not in fields[3]:
            continue

        address, _, port_text = fields[3].rpartition(":")
        if not port_text.isdigit():
            continue

        processes = SS_PROCESS_PATTERN.findall(" ".join(fields[5:])) or [("", "0")]
        for process, pid in processes:
            listeners.append(
                Listener(address=address, port=int(port_text), process=process, pid=int(pid))
            )

    return listeners


def parse_published_ports(ports_text: str) -> list[int]:
    """Return the TCP host ports in a `docker ps` Ports column.

    Handles "0.0.0.0:8000->8000/tcp", "[::]:8000->8000/tcp" and ranges such as
    "0.0.0.0:8000-8001->8000-8001/tcp". Exposed ports without a host side are skipped.
    """
    host_ports: set[int] = set()
    for mapping in ports_text.split(","):
        host_side, arrow, container_side = mapping.strip().partition("->")
        if not arrow or not container_side.endswith("/tcp"):
            continue

        port_range = host_side.rpartition(":")[2]
        first, _, last = port_range.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            continue
        host_ports.update(range(int(first), int(last or first) + 1))

    return sorted(host_ports)


def parse_docker_ps(text: str) -> list[Container]:
    """Parse `docker ps --no-trunc` lines formatted as ID, name and ports, tab-separated."""
    containers: list[Container] = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0]:
            continue
        ports_text = fields[2] if len(fields) > 2 else ""
        containers.append(
            Container(id=fields[0], name=fields[1], host_ports=parse_published_ports(ports_text))
        )
    return containers


def container_id_of_cgroup(cgroup_text: str) -> str:
    """Return the last container ID in a /proc/PID/cgroup file, or "".

    Matches cgroup v1 ("/docker/ID") and v2 ("/system.slice/docker-ID.scope") layouts. The last
    ID is the innermost container when engines are nested.
    """
    found = CONTAINER_ID_PATTERN.findall(cgroup_text)
    return found[-1] if found else ""


def _describe_listener(listener: Listener) -> str:
    if not listener["process"]:
        return f"an unknown process on {listener['address']}"
    return f"{listener['process']} (pid {listener['pid']}) on {listener['address']}"


def classify_ports(
    ports: list[int],
    listeners: list[Listener],
    containers: list[Container],
    container_by_pid: dict[int, str],
    owned_names: list[str],
) -> list[PortState]:
    """Decide for each port whether it is free, owned by us, or held by something else.

    container_by_pid maps listener PIDs to the container ID whose cgroup they run in.
    """
    name_by_id = {container["id"]: container["name"] for container in containers}
    states: list[PortState] = []

    for port in ports:
        publishers = [c["name"] for c in containers if port in c["host_ports"]]
        owned_by = sorted({name for name in publishers if name in owned_names})
        holders = [f"container {name}" for name in publishers if name not in owned_names]

        for listener in (entry for entry in listeners if entry["port"] == port):
            container_name = name_by_id.get(container_by_pid.get(listener["pid"], ""), "")
            if container_name in owned_names:
                owned_by = sorted({*owned_by, container_name})
                continue
            if container_name:
                holders.append(f"{_describe_listener(listener)} in container {container_name}")
                continue
            proxies_for_us = listener["process"] in ("docker-proxy", "") and any(
                name in owned_names for name in publishers
            )
            if not proxies_for_us:
                holders.append(_describe_listener(listener))

        states.append(PortState(port=port, free=not holders, owned_by=owned_by, holders=holders))

    return states


def _run(argv: list[str], timeout_s: int) -> tuple[int, str, str]:
    try:
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"{argv[0]} timed out after {timeout_s} s"
    except OSError as error:
        return -1, "", str(error)
    return completed.returncode, completed.stdout, completed.stderr.strip()


def _read_cgroup_container(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            return container_id_of_cgroup(handle.read())
    except OSError:
        return ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "ports": {"type": "list", "elements": "int", "required": True},
            "owned_containers": {"type": "list", "elements": "str", "default": []},
            "command_timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    timeout_s = module.params["command_timeout"]

    ss = module.get_bin_path("ss")
    if ss is None:
        module.exit_json(changed=False, ports=[], error="ss not found in PATH")
    returncode, stdout, stderr = _run([ss, "-ltnpH"], timeout_s)
    if returncode != 0:
        module.exit_json(
            changed=False, ports=[], error=f"ss -ltnpH failed (exit code {returncode}: {stderr})"
        )
    listeners = parse_ss_listeners(stdout)

    containers: list[Container] = []
    docker = module.get_bin_path("docker")
    if docker is not None:
        # A stopped engine or a missing permission leaves the list empty, so listeners are
        # then judged by their process alone.
        returncode, stdout, _ = _run(
            [docker, "ps", "--no-trunc", "--format", "{{.ID}}\t{{.Names}}\t{{.Ports}}"],
            timeout_s,
        )
        if returncode == 0:
            containers = parse_docker_ps(stdout)

    container_by_pid = {
        listener["pid"]: _read_cgroup_container(listener["pid"])
        for listener in listeners
        if listener["pid"]
    }
    states = classify_ports(
        module.params["ports"],
        listeners,
        containers,
        container_by_pid,
        module.params["owned_containers"],
    )
    module.exit_json(changed=False, ports=states, error="")


if __name__ == "__main__":
    main()
