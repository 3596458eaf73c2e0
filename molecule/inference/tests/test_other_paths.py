"""Role paths the converge run does not take: an operator-supplied API key and the
mirror image source. The run_role fixture (conftest.py) drives ansible-playbook.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

RunRole = Callable[..., Any]


def container_env(host: Any, name: str) -> list[str]:
    inspect = json.loads(host.check_output("docker inspect --type container %s", name))
    return list(inspect[0]["Config"]["Env"])


def test_operator_key_written_once(host: Any, run_role: RunRole) -> None:
    name = "oneclick-serving-operator-key"
    key_dir = "/etc/oneclick-operator-test"
    key_file = f"{key_dir}/api-key"
    operator_key = "operator" + secrets.token_hex(16)
    later_key = "later" + secrets.token_hex(16)
    settings = {
        "inference_container_name": name,
        "inference_port": 8004,
        "inference_api_key_file": key_file,
    }
    try:
        first = run_role({**settings, "inference_api_key": operator_key}, (operator_key,))
        written = host.file(key_file).content_string.strip()
        mode = host.file(key_file).mode
        dir_mode = host.file(key_dir).mode
        first_env = container_env(host, name)
        second = run_role({**settings, "inference_api_key": later_key}, (operator_key, later_key))
        key_after_second_run = host.file(key_file).content_string.strip()
    finally:
        host.run("docker rm --force %s", name)
        host.run("rm -rf %s", key_dir)

    assert first.returncode == 0, f"the run with an operator key failed:\n{first.output}"
    assert written == operator_key, "the key file must hold the operator's inference_api_key"
    assert mode == 0o600, f"{key_file} has mode {mode:o}, expected 600"
    assert dir_mode == 0o700, f"{key_dir} has mode {dir_mode:o}, expected 700"
    assert f"VLLM_API_KEY={operator_key}" in first_env, "the container must get the operator key"
    assert second.returncode == 0, f"the second run failed:\n{second.output}"
    assert "changed=0" in second.output, (
        f"a new inference_api_key must change nothing:\n{second.output}"
    )
    assert key_after_second_run == operator_key, (
        "a later inference_api_key must not replace an existing key file"
    )


def test_mirror_source_tags_image(host: Any, run_role: RunRole) -> None:
    name = "oneclick-serving-mirror"
    image = "oneclick-fixture/serving-standin:mirror-test"
    # The .invalid top-level domain is reserved and never resolves. The mirrored name is tagged in
    # advance, so docker_image_pull finds it and nothing is pulled.
    mirrored = f"mirror.invalid/{image}"
    host.check_output("docker tag oneclick-fixture/serving-standin:test %s", mirrored)
    try:
        result = run_role(
            {
                "inference_container_name": name,
                "inference_port": 8005,
                "inference_engine_image": image,
                "inference_image_source": "mirror",
                "inference_image_mirror": "mirror.invalid",
            }
        )
        tagged = host.run("docker image inspect %s", image).rc == 0
        container_image = host.check_output(
            "docker inspect --type container --format %s %s", "{{.Config.Image}}", name
        )
    finally:
        host.run("docker rm --force %s", name)
        host.run("docker rmi %s %s", image, mirrored)

    assert result.returncode == 0, f"the run with the mirror source failed:\n{result.output}"
    assert tagged, f"the mirrored image must be tagged as {image}"
    assert container_image == image, f"the container runs {container_image}, expected {image}"
