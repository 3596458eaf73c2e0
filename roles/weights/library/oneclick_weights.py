#!/usr/bin/python
"""Ansible module that stages model weights into a directory and checks that they are complete."""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]
from ansible.module_utils.oneclick_weights_core import (  # type: ignore[import-untyped]
    SOURCES,
    Source,
    WeightsError,
    stage,
)

DOCUMENTATION = r"""
---
module: oneclick_weights
short_description: Stage model weights into a directory, resumably, and check that they are complete
description:
  - Lists the files of a source (a directory on the host, a web server that publishes
    C(oneclick-weights.json), Hugging Face or ModelScope), checks the free space on the
    destination's filesystem for what is still missing, then transfers each file into
    C(<name>.incomplete) and renames it once its size and sha256 (when the source gives one) match.
  - An interrupted transfer resumes from the size of its C(.incomplete) file, with an HTTP Range
    request for remote sources.
  - Afterwards checks that the directory is complete (C(config.json), every shard named in
    C(model.safetensors.index.json), no C(.incomplete) file) and records the staged files in
    C(.oneclick-weights.json). A later run whose marker still matches transfers nothing and, for
    remote sources, sends no request.
  - With O(source=present) it only checks the directory and records the marker.
  - Skips repository clutter - hidden files such as C(.gitattributes), C(original/), and pickle
    copies (C(*.bin), C(*.pt), C(*.pth)) when safetensors exist.
options:
  source:
    description: Where the weights come from.
    type: str
    choices: [present, local, url, huggingface, modelscope]
    required: true
  path:
    description: Absolute path of the model directory to fill.
    type: path
    required: true
  local_path:
    description: Absolute path of the source directory on the host, for O(source=local).
    type: path
  url:
    description: Base URL of a directory that contains C(oneclick-weights.json), for O(source=url).
    type: str
  model_id:
    description: Repository id such as C(deepseek-ai/DeepSeek-R1-Distill-Qwen-7B), for the hubs.
    type: str
  revision:
    description: Branch, tag or commit of the repository.
    type: str
    default: main
  endpoint:
    description: Hub endpoint; empty means the hub's public one. A mirror such as
      C(https://hf-mirror.com) goes here.
    type: str
    default: ""
  token:
    description: Access token sent as a Bearer token to the hub's own host, never to redirects
      elsewhere.
    type: str
    default: ""
  timeout:
    description: Seconds to wait for a connection and for each read.
    type: float
    default: 30
  retries:
    description: Retries of each request after a failure that another try can fix, 0 to 20.
    type: int
    default: 5
"""

EXAMPLES = r"""
- name: Stage the weights from a bundle directory
  oneclick_weights:
    source: local
    local_path: /media/bundle/weights/DeepSeek-R1-Distill-Qwen-7B
    path: /srv/oneclick/models/DeepSeek-R1-Distill-Qwen-7B
"""

RETURN = r"""
files:
  description: The staged files (or in check mode, the files listed) with size and sha256.
  type: list
  elements: dict
  returned: always
bytes_transferred:
  description: Bytes written into the model directory by this run.
  type: int
  returned: always
bytes_to_transfer:
  description: Bytes still missing before this run, which the space check compared.
  type: int
  returned: always
transferred:
  description: Names of the files transferred (in check mode, the ones that would be).
  type: list
  elements: str
  returned: always
restarted:
  description: Files whose server ignored the Range request and which were sent from the start.
  type: list
  elements: str
  returned: always
skipped:
  description: Files of the source that were not staged (repository clutter).
  type: list
  elements: str
  returned: always
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str", "choices": list(SOURCES), "required": True},
            "path": {"type": "path", "required": True},
            "local_path": {"type": "path"},
            "url": {"type": "str"},
            "model_id": {"type": "str"},
            "revision": {"type": "str", "default": "main"},
            "endpoint": {"type": "str", "default": ""},
            "token": {"type": "str", "default": "", "no_log": True},
            "timeout": {"type": "float", "default": 30.0},
            "retries": {"type": "int", "default": 5},
        },
        required_if=[
            ("source", "local", ["local_path"]),
            ("source", "url", ["url"]),
            ("source", "huggingface", ["model_id"]),
            ("source", "modelscope", ["model_id"]),
        ],
        supports_check_mode=True,
    )
    params: dict[str, Any] = module.params
    kind = params["source"]
    location = params["local_path"] if kind == "local" else params["url"]
    source = Source(
        kind=kind,
        location=location or "",
        model_id=params["model_id"] or "",
        revision=params["revision"],
        endpoint=params["endpoint"],
        token=params["token"],
        timeout=params["timeout"],
        retries=params["retries"],
    )

    try:
        result = stage(source, params["path"], check_mode=module.check_mode)
    except WeightsError as error:
        module.fail_json(msg=str(error))

    module.exit_json(
        changed=result.changed,
        files=[
            {"name": entry.name, "size": entry.size, "sha256": entry.sha256}
            for entry in result.files
        ],
        bytes_transferred=result.bytes_transferred,
        bytes_to_transfer=result.bytes_to_transfer,
        transferred=result.transferred,
        restarted=result.restarted,
        skipped=result.skipped,
    )


if __name__ == "__main__":
    main()
