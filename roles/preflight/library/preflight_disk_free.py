#!/usr/bin/python
"""Ansible module that measures free disk space for the preflight role."""

from __future__ import annotations

import os
import stat
import time
from typing import TypedDict

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: preflight_disk_free
short_description: Measure the free space on the filesystems of some paths
description:
  - For each requirement, measures the space available to unprivileged users (what C(df)
    shows as Avail) on the filesystem that holds O(requirements[].path). A path that does not
    exist yet is measured at its nearest existing ancestor.
  - Space already used under an existing path on that filesystem counts towards its need, so
    the check still passes after the data it was sized for (models, images) has arrived.
  - When several paths share one filesystem, also checks that it has room for all of them
    together, because each path on its own could pass while the sum does not fit.
  - GB means 10^9 bytes. Reads only; it never changes the host.
options:
  requirements:
    description: Paths with the free space each needs.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path that will hold the data.
        type: path
        required: true
      min_free_gb:
        description: Free space the path needs, in GB.
        type: int
        required: true
"""

EXAMPLES = r"""
- name: Measure free disk space
  preflight_disk_free:
    requirements:
      - path: /srv/oneclick/models
        min_free_gb: 150
  register: __preflight_disk
"""

RETURN = r"""
paths:
  description: One entry per requirement, in the order given. Sizes are in GB.
  type: list
  elements: dict
  returned: always
  sample:
    - path: /srv/oneclick/models
      measured_path: /srv/oneclick/models
      mount_point: /
      free_gb: 42.0
      used_gb: 120.5
      usage_complete: true
      min_free_gb: 150
      ok: true
shared:
  description: Filesystems that contain more than one requirement, with the summed need.
  type: list
  elements: dict
  returned: always
  sample:
    - mount_point: /
      paths: [/var/lib/docker, /srv/oneclick/models]
      free_gb: 180.2
      used_gb: 0.0
      min_free_gb: 200
      ok: false
"""

BYTES_PER_GB = 1_000_000_000
# A walk over a large Docker data root can take a while. Past this limit the usage counted so
# far is used, which can only make the check stricter.
USAGE_WALK_LIMIT_S = 120.0


class PathFree(TypedDict):
    path: str
    measured_path: str
    mount_point: str
    free_gb: float
    used_gb: float
    usage_complete: bool
    min_free_gb: int
    ok: bool


class SharedFree(TypedDict):
    mount_point: str
    paths: list[str]
    free_gb: float
    used_gb: float
    min_free_gb: int
    ok: bool


def nearest_existing_path(path: str) -> str:
    """Return the path itself when it exists, else its closest existing ancestor."""
    candidate = os.path.normpath(path)
    while not os.path.exists(candidate):
        parent = os.path.dirname(candidate)
        if parent == candidate:
            break
        candidate = parent
    return candidate


def mount_point_of(path: str) -> str:
    """Return the mount point of the filesystem that contains an existing path."""
    candidate = os.path.realpath(path)
    while not os.path.ismount(candidate):
        candidate = os.path.dirname(candidate)
    return candidate


def free_bytes(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def used_bytes(path: str, limit_s: float = USAGE_WALK_LIMIT_S) -> tuple[int, bool]:
    """Sum the allocated size of the files under a path, like du -x.

    Stays on the path's filesystem and counts each hard-linked file once. Returns the sum and
    whether the walk finished within limit_s seconds.
    """
    deadline = time.monotonic() + limit_s
    device = os.lstat(path).st_dev
    seen: set[int] = set()
    total = 0
    pending = [path]

    while pending:
        if time.monotonic() > deadline:
            return total, False
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue

        for entry in entries:
            try:
                stats = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stats.st_dev != device or stats.st_ino in seen:
                continue
            seen.add(stats.st_ino)
            total += stats.st_blocks * 512
            if stat.S_ISDIR(stats.st_mode):
                pending.append(entry.path)

    return total, True


def _is_inside(path: str, others: list[str]) -> bool:
    return any(path != other and path.startswith(other.rstrip("/") + "/") for other in others)


def measure(requirements: list[dict[str, object]]) -> tuple[list[PathFree], list[SharedFree]]:
    """Measure each requirement, then every filesystem that contains more than one of them."""
    paths: list[PathFree] = []
    used_by_path: dict[str, int] = {}
    by_device: dict[int, list[PathFree]] = {}

    for requirement in requirements:
        path = os.path.normpath(str(requirement["path"]))
        min_free_gb = int(str(requirement["min_free_gb"]))
        measured_path = nearest_existing_path(path)
        available = free_bytes(measured_path)

        used, complete = 0, True
        if measured_path == path and os.path.isdir(path):
            used, complete = used_bytes(path)
        used_by_path[path] = used

        entry = PathFree(
            path=path,
            measured_path=measured_path,
            mount_point=mount_point_of(measured_path),
            free_gb=round(available / BYTES_PER_GB, 1),
            used_gb=round(used / BYTES_PER_GB, 1),
            usage_complete=complete,
            min_free_gb=min_free_gb,
            ok=available + used >= min_free_gb * BYTES_PER_GB,
        )
        paths.append(entry)
        by_device.setdefault(os.stat(measured_path).st_dev, []).append(entry)

    shared: list[SharedFree] = []
    for entries in by_device.values():
        if len(entries) < 2:
            continue

        group_paths = [entry["path"] for entry in entries]
        # A path nested in another one is already part of that one's usage.
        used = sum(used_by_path[path] for path in group_paths if not _is_inside(path, group_paths))
        available = free_bytes(entries[0]["measured_path"])
        needed_gb = sum(entry["min_free_gb"] for entry in entries)
        shared.append(
            SharedFree(
                mount_point=entries[0]["mount_point"],
                paths=group_paths,
                free_gb=round(available / BYTES_PER_GB, 1),
                used_gb=round(used / BYTES_PER_GB, 1),
                min_free_gb=needed_gb,
                ok=available + used >= needed_gb * BYTES_PER_GB,
            )
        )

    return paths, shared


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "requirements": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "min_free_gb": {"type": "int", "required": True},
                },
            },
        },
        supports_check_mode=True,
    )

    try:
        paths, shared = measure(module.params["requirements"])
    except OSError as error:
        module.fail_json(msg=f"Could not measure free disk space: {error}")

    module.exit_json(changed=False, paths=paths, shared=shared)


if __name__ == "__main__":
    main()
