"""What a user of the converged host can observe: the serving container and its API.

The host runs the serving stand-in test fixture in place of the vLLM image, so
the API answers without a GPU. HTTP requests run inside the host with its own
python3, against the port the role published on the host's loopback.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

CONTAINER = "oneclick-serving"
SERVED_MODEL = "test-model"
API_BASE = "http://127.0.0.1:8000"
KEY_FILE = "/etc/oneclick/api-key"
HEALTHY_TIMEOUT_S = 90

# Runs inside the host. It reads the key from the key file itself, so the key
# never appears in a command line or in the test output.
HTTP_PROBE = """
import json, sys, urllib.error, urllib.request
url, method, send_key, body = sys.argv[1], sys.argv[2], sys.argv[3] == "yes", sys.argv[4]
headers = {"Content-Type": "application/json"}
if send_key:
    with open("/etc/oneclick/api-key") as key_file:
        headers["Authorization"] = "Bearer " + key_file.read().strip()
request = urllib.request.Request(url, data=body.encode() or None, headers=headers, method=method)
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode()
print(json.dumps({"status": status, "body": text}))
"""


def http(host: Any, path: str, method: str = "GET", body: Any = None, send_key: bool = True) -> Any:
    """Send a request from inside the host and return {"status": int, "body": str}."""
    payload = "" if body is None else json.dumps(body)
    output = host.check_output(
        "python3 -c %s %s %s %s %s",
        HTTP_PROBE,
        API_BASE + path,
        method,
        "yes" if send_key else "no",
        payload,
    )
    return json.loads(output)


def inspect(host: Any) -> Any:
    return json.loads(host.check_output("docker inspect %s", CONTAINER))[0]


@pytest.fixture(scope="module")
def container(host: Any) -> Any:
    """Wait, bounded, until the container is healthy and return its `docker inspect` data."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = inspect(host)["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return inspect(host)
        time.sleep(2)
    logs = host.run("docker logs --tail 30 %s", CONTAINER)
    pytest.fail(
        f"{CONTAINER} not healthy after {HEALTHY_TIMEOUT_S} s, state {json.dumps(state)}:\n"
        f"{logs.stdout}{logs.stderr}"
    )


def test_container_running_healthy(container: Any) -> None:
    assert container["State"]["Running"], f"{CONTAINER} is not running"
    assert container["State"]["Health"]["Status"] == "healthy", f"{CONTAINER} is not healthy"


def test_port_bound_loopback_only(host: Any, container: Any) -> None:
    bindings = container["HostConfig"]["PortBindings"]["8000/tcp"]

    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": "8000"}], (
        f"port 8000 must be published on 127.0.0.1 only, got {bindings}"
    )
    assert host.socket("tcp://127.0.0.1:8000").is_listening, "nothing listens on 127.0.0.1:8000"
    assert not host.socket("tcp://0.0.0.0:8000").is_listening, "port 8000 listens on all interfaces"


def test_models_lists_served_name(container: Any, host: Any) -> None:
    response = http(host, "/v1/models")

    assert response["status"] == 200, f"/v1/models returned {response}"
    model_ids = [model["id"] for model in json.loads(response["body"])["data"]]
    assert model_ids == [SERVED_MODEL], f"/v1/models lists {model_ids}"


def test_chat_completion_with_key(container: Any, host: Any) -> None:
    request = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "Hello"}]}

    response = http(host, "/v1/chat/completions", "POST", request)
    payload = json.loads(response["body"])

    assert response["status"] == 200, f"chat completion returned {response}"
    assert payload["object"] == "chat.completion", f"not an OpenAI chat completion: {payload}"
    assert payload["model"] == SERVED_MODEL, f"wrong model in {payload}"
    assert payload["choices"][0]["message"]["content"], f"empty reply in {payload}"
    assert payload["usage"]["total_tokens"] > 0, f"no token usage in {payload}"


def test_chat_without_key_401(container: Any, host: Any) -> None:
    request = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "Hello"}]}

    response = http(host, "/v1/chat/completions", "POST", request, send_key=False)

    assert response["status"] == 401, f"a request without the key must get 401, got {response}"
    assert "error" in json.loads(response["body"]), "the 401 must carry an OpenAI error object"


def test_metrics_served(container: Any, host: Any) -> None:
    response = http(host, "/metrics", send_key=False)

    assert response["status"] == 200, f"/metrics returned {response['status']}"
    sample = f'vllm:num_requests_running{{engine="0",model_name="{SERVED_MODEL}"}}'
    assert sample in response["body"], f"/metrics must carry {sample}"


def test_key_file_private(host: Any) -> None:
    key_file = host.file(KEY_FILE)
    key_dir = host.file("/etc/oneclick")

    assert key_file.is_file, f"{KEY_FILE} is missing"
    assert key_file.user == "root", f"{KEY_FILE} must be owned by root"
    assert key_file.group == "root", f"{KEY_FILE} must belong to group root"
    assert key_file.mode == 0o600, f"{KEY_FILE} has mode {key_file.mode:o}, expected 600"
    assert key_dir.user == "root", "/etc/oneclick must be owned by root"
    assert key_dir.mode == 0o700, f"/etc/oneclick has mode {key_dir.mode:o}, expected 700"


def test_generated_key_strong(host: Any) -> None:
    key = host.file(KEY_FILE).content_string.strip()

    assert len(key) >= 32, "the generated key must have at least 32 characters"
    assert key.isascii(), "the generated key must be ASCII"
    assert key.isalnum(), "the generated key must contain only letters and digits"


def test_key_passed_to_container(container: Any, host: Any) -> None:
    key = host.file(KEY_FILE).content_string.strip()
    env = container["Config"]["Env"]

    assert f"VLLM_API_KEY={key}" in env, "the container must get the key file's key as VLLM_API_KEY"


def test_weights_mount_read_only(container: Any) -> None:
    mounts = {mount["Destination"]: mount for mount in container["Mounts"]}

    assert "/model" in mounts, f"no mount at /model: {list(mounts)}"
    assert mounts["/model"]["Source"] == "/srv/oneclick/models/test-model", "wrong weights source"
    assert mounts["/model"]["RW"] is False, "the weights must be mounted read-only"


def test_ipc_host_and_restart_policy(container: Any) -> None:
    host_config = container["HostConfig"]

    assert host_config["IpcMode"] == "host", f"IpcMode is {host_config['IpcMode']}, expected host"
    assert host_config["RestartPolicy"]["Name"] == "unless-stopped", "wrong restart policy"


def test_hub_clients_offline(container: Any) -> None:
    env = container["Config"]["Env"]

    assert "HF_HUB_OFFLINE=1" in env, "HF_HUB_OFFLINE=1 must be set"
    assert "TRANSFORMERS_OFFLINE=1" in env, "TRANSFORMERS_OFFLINE=1 must be set"


def test_no_gpus_requested(container: Any) -> None:
    device_requests = container["HostConfig"]["DeviceRequests"]

    assert not device_requests, f"a host without GPUs must request none, got {device_requests}"


def test_engine_command(container: Any) -> None:
    command = container["Config"]["Cmd"]
    pairs = dict(zip(command[::2], command[1::2], strict=False))

    assert pairs.get("--model") == "/model", f"--model must be the mount point: {command}"
    assert pairs.get("--served-model-name") == SERVED_MODEL, f"wrong served name: {command}"
    assert pairs.get("--port") == "8000", f"the engine must listen on 8000: {command}"
    assert pairs.get("--tensor-parallel-size") == "4", f"wrong tensor parallel size: {command}"
    assert pairs.get("--max-model-len") == "32768", f"wrong max model length: {command}"
    assert "--api-key" not in command, "the key must not be on the command line"


def test_labels_and_healthcheck(container: Any) -> None:
    labels = container["Config"]["Labels"]
    healthcheck = container["Config"]["Healthcheck"]["Test"]

    assert labels["io.oneclick.model-id"] == "oneclick/test-model", f"wrong labels: {labels}"
    assert labels["io.oneclick.served-model-name"] == SERVED_MODEL, f"wrong labels: {labels}"
    assert labels["io.oneclick.image"] == "oneclick-fixture/serving-standin:test", "wrong image"
    assert healthcheck[:2] == ["CMD", "python3"], f"unexpected healthcheck {healthcheck}"
    assert "http://127.0.0.1:8000/health" in healthcheck[-1], "healthcheck must probe /health"
