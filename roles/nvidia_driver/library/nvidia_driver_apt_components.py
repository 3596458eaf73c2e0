#!/usr/bin/python
"""Ansible module that enables archive components in a Debian host's APT sources."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: nvidia_driver_apt_components
short_description: Enable components such as non-free in the APT sources of a Debian release
description:
  - Reads O(sources_list) (one-line format) and every C(*.list) (one-line format) and
    C(*.sources) (deb822 format) file in O(sources_dir).
  - An entry is edited when it is active, is of type C(deb) or C(deb-src), names the suite
    O(release) or a suite that starts with O(release) followed by C(-) or C(/) (for example
    C(bookworm-updates) and C(bookworm-security)), and already lists the C(main) component.
    Other entries, such as third-party repositories, flat repositories and C(cdrom:) entries,
    are left alone.
  - Each edited entry gets the components of O(components) that it lacks, appended after its
    existing components. Comments, options, spacing and every other line stay as they were.
  - Commented-out one-line entries and deb822 stanzas with C(Enabled: no) are not edited.
  - A file whose entries already list every component is not rewritten, so the module is
    idempotent.
options:
  release:
    description: Code name of the Debian release whose entries are edited, for example C(bookworm).
    type: str
    required: true
  components:
    description: Components that every matching entry must list.
    type: list
    elements: str
    default: [contrib, non-free, non-free-firmware]
  sources_list:
    description: Path of the one-line format main sources file.
    type: path
    default: /etc/apt/sources.list
  sources_dir:
    description: Directory of further sources files.
    type: path
    default: /etc/apt/sources.list.d
  backup:
    description: Keep a timestamped copy of each file next to it before changing it.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - The module does not refresh the package index. Run C(apt-get update) when it reports a change.
  - A deb822 C(Components) field that spans several lines is rewritten as one line.
author:
  - oneclick maintainers
"""

EXAMPLES = r"""
- name: Enable contrib, non-free and non-free-firmware for Debian 12
  nvidia_driver_apt_components:
    release: bookworm
  register: __nvidia_driver_components
"""

RETURN = r"""
matched:
  description: Number of entries that belong to O(release) and list C(main).
  returned: success
  type: int
  sample: 3
changed_files:
  description: Paths of the files that were (or, in check mode, would be) rewritten.
  returned: success
  type: list
  elements: str
  sample: [/etc/apt/sources.list.d/debian.sources]
backup_files:
  description: Paths of the copies made before rewriting, in the order of RV(changed_files).
  returned: success
  type: list
  elements: str
"""

DEFAULT_COMPONENTS = ["contrib", "non-free", "non-free-firmware"]

# One-line entry: type, optional [options], URI, suite, components, optional comment.
ONE_LINE_ENTRY = re.compile(
    r"^(?P<head>\s*(?P<type>deb|deb-src)\s+(?:\[[^\]]*\]\s+)?"
    r"(?P<uri>\S+)\s+(?P<suite>\S+))"
    r"(?P<components>(?:[ \t]+[^\s#]+)*)"
    r"(?P<tail>\s*(?:#.*)?)$"
)

DEB822_FIELD = re.compile(r"^(?P<name>[A-Za-z0-9-]+):(?P<value>.*)$")


@dataclass
class EditResult:
    """Outcome of editing the text of one sources file."""

    text: str
    matched: int = 0
    edited: int = 0
    notes: list[str] = field(default_factory=list)


def suite_matches(suite: str, release: str) -> bool:
    """Tell whether suite belongs to release (bookworm, bookworm-updates, bookworm/updates)."""
    return suite == release or suite.startswith((f"{release}-", f"{release}/"))


def missing_components(present: list[str], required: list[str]) -> list[str]:
    return [component for component in required if component not in present]


def edit_one_line_text(text: str, release: str, required: list[str]) -> EditResult:
    """Add the missing required components to the matching entries of a one-line format file."""
    result = EditResult(text="")
    output: list[str] = []

    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        match = ONE_LINE_ENTRY.match(body)

        if match is None or match["uri"].startswith("cdrom:"):
            output.append(line)
            continue

        components = match["components"].split()
        if not suite_matches(match["suite"], release) or "main" not in components:
            output.append(line)
            continue

        result.matched += 1
        missing = missing_components(components, required)
        if not missing:
            output.append(line)
            continue

        result.edited += 1
        new_body = match["head"] + match["components"] + " " + " ".join(missing) + match["tail"]
        output.append(new_body + ending)

    result.text = "".join(output)
    return result


def split_stanzas(lines: list[str]) -> list[tuple[int, int]]:
    """Return (start, end) line ranges of the deb822 stanzas, blank lines excluded."""
    stanzas: list[tuple[int, int]] = []
    start: int | None = None

    for index, line in enumerate(lines):
        if line.strip() == "":
            if start is not None:
                stanzas.append((start, index))
                start = None
        elif start is None:
            start = index

    if start is not None:
        stanzas.append((start, len(lines)))
    return stanzas


def read_stanza_fields(lines: list[str]) -> dict[str, tuple[int, int, str]]:
    """Map each lower-cased field name to (first line, end line, folded value).

    Comment lines (starting with #) are skipped. Continuation lines start with a space or tab.
    """
    fields: dict[str, tuple[int, int, str]] = {}
    current: str | None = None

    for index, line in enumerate(lines):
        body = line.rstrip("\r\n")
        if body.startswith("#"):
            continue

        if body[:1] in (" ", "\t") and current is not None:
            first, _, value = fields[current]
            fields[current] = (first, index + 1, f"{value} {body.strip()}")
            continue

        match = DEB822_FIELD.match(body)
        if match is None:
            current = None
            continue

        current = match["name"].lower()
        fields[current] = (index, index + 1, match["value"].strip())

    return fields


def stanza_is_enabled(fields: dict[str, tuple[int, int, str]]) -> bool:
    if "enabled" not in fields:
        return True
    return fields["enabled"][2].lower() not in ("no", "false", "0")


def edit_deb822_text(text: str, release: str, required: list[str]) -> EditResult:
    """Add the missing required components to the matching stanzas of a deb822 format file."""
    result = EditResult(text=text)
    lines = text.splitlines(keepends=True)
    replacements: list[tuple[int, int, str]] = []

    for start, end in split_stanzas(lines):
        fields = read_stanza_fields(lines[start:end])
        if not stanza_is_enabled(fields) or "components" not in fields:
            continue

        types = fields.get("types", (0, 0, ""))[2].split()
        uris = fields.get("uris", (0, 0, ""))[2].split()
        suites = fields.get("suites", (0, 0, ""))[2].split()
        if not {"deb", "deb-src"} & set(types):
            continue
        if not uris or all(uri.startswith("cdrom:") for uri in uris):
            continue
        if not any(suite_matches(suite, release) for suite in suites):
            continue

        first, last, value = fields["components"]
        components = value.split()
        if "main" not in components:
            continue

        result.matched += 1
        missing = missing_components(components, required)
        if not missing:
            continue

        result.edited += 1
        original = lines[start + first]
        ending = original[len(original.rstrip("\r\n")) :] or "\n"
        name = original.split(":", 1)[0]
        new_line = f"{name}: {' '.join(components + missing)}{ending}"
        replacements.append((start + first, start + last, new_line))

    for first_line, end_line, new_line in reversed(replacements):
        lines[first_line:end_line] = [new_line]

    result.text = "".join(lines)
    return result


def list_source_files(sources_list: str, sources_dir: str) -> list[tuple[str, str]]:
    """Return (path, format) for every sources file APT reads, format one-line or deb822."""
    files: list[tuple[str, str]] = []
    if os.path.isfile(sources_list):
        files.append((sources_list, "one-line"))

    files.extend((path, "one-line") for path in sorted(glob.glob(f"{sources_dir}/*.list")))
    files.extend((path, "deb822") for path in sorted(glob.glob(f"{sources_dir}/*.sources")))
    return files


def edit_file_text(text: str, file_format: str, release: str, required: list[str]) -> EditResult:
    if file_format == "deb822":
        return edit_deb822_text(text, release, required)
    return edit_one_line_text(text, release, required)


def write_in_place(module: AnsibleModule, path: str, text: str) -> None:
    """Write text to a temporary file beside path and rename it over path, keeping attributes."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary_path = os.path.join(directory, f".{os.path.basename(path)}.oneclick-tmp")
    with open(temporary_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    module.atomic_move(temporary_path, path)


def run_module() -> None:
    """Enable the requested components and report the result to Ansible."""
    module = AnsibleModule(
        argument_spec={
            "release": {"type": "str", "required": True},
            "components": {"type": "list", "elements": "str", "default": DEFAULT_COMPONENTS},
            "sources_list": {"type": "path", "default": "/etc/apt/sources.list"},
            "sources_dir": {"type": "path", "default": "/etc/apt/sources.list.d"},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    release: str = module.params["release"]
    required: list[str] = module.params["components"]

    matched = 0
    changed_files: list[str] = []
    backup_files: list[str] = []
    diffs: list[dict[str, str]] = []

    for path, file_format in list_source_files(
        module.params["sources_list"], module.params["sources_dir"]
    ):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            module.fail_json(msg=f"Could not read the APT sources file {path}: {error}")

        result = edit_file_text(text, file_format, release, required)
        matched += result.matched
        if result.text == text:
            continue

        changed_files.append(path)
        diffs.append(
            {"before_header": path, "after_header": path, "before": text, "after": result.text}
        )
        if module.check_mode:
            continue

        if module.params["backup"]:
            backup_files.append(module.backup_local(path))
        try:
            write_in_place(module, path, result.text)
        except OSError as error:
            module.fail_json(msg=f"Could not write the APT sources file {path}: {error}")

    output: dict[str, Any] = {
        "changed": bool(changed_files),
        "matched": matched,
        "changed_files": changed_files,
        "backup_files": backup_files,
    }
    if module._diff:
        output["diff"] = diffs
    module.exit_json(**output)


if __name__ == "__main__":
    run_module()
