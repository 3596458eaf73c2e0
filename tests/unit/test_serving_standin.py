"""Tests for the serving stand-in test fixture (tests/fixtures/images/serving-standin).

Each test starts the server as a subprocess on a free loopback port, so no
Docker engine is needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVER_SCRIPT = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "images"
    / "serving-standin"
    / "standin_server.py"
)
STARTUP_TIMEOUT_S = 10.0
API_KEY = "unit-test-key-0123456789abcdefXYZ"
SERVED_NAME = "standin-served"


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StandinProcess:
    process: subprocess.Popen[str]
    base_url: str
    output: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        api_key: str | None = None,
    ) -> Response:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(
            self.base_url + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return Response(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, dict(error.headers), error.read())

    def chat(self, payload: Any, api_key: str | None = API_KEY) -> Response:
        return self.request("POST", "/v1/chat/completions", json.dumps(payload).encode(), api_key)

    def stop(self) -> str:
        """Send SIGTERM, wait for the exit and return everything the server logged."""
        if self.output is None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            self.output, _ = self.process.communicate(timeout=10)
        return self.output


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_standin(
    extra_args: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    served_name: str | None = SERVED_NAME,
) -> StandinProcess:
    port = free_port()
    command = [sys.executable, str(SERVER_SCRIPT), "--model", "/model", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    if served_name is not None:
        command += ["--served-model-name", served_name]
    command += extra_args or []
    process_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VLLM_API_KEY", "STANDIN_STARTUP_DELAY", "STANDIN_NEVER_READY"}
    }
    process_env.update(env or {})
    process = subprocess.Popen(
        command,
        env=process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    standin = StandinProcess(process, f"http://127.0.0.1:{port}")

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output, _ = process.communicate()
            pytest.fail(f"stand-in exited with {process.returncode} during start-up:\n{output}")
        try:
            if standin.request("GET", "/health").status == 200:
                return standin
        except OSError:
            time.sleep(0.1)
    output = standin.stop()
    pytest.fail(f"stand-in did not answer /health within {STARTUP_TIMEOUT_S} s:\n{output}")


def wait_until_ready(standin: StandinProcess, timeout_s: float) -> float:
    """Poll /v1/models until 200 and return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if standin.request("GET", "/v1/models", api_key=API_KEY).status == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"stand-in did not become ready within {timeout_s} s")


@pytest.fixture
def standin() -> Iterator[StandinProcess]:
    server = start_standin(extra_args=["--api-key", API_KEY])
    yield server
    server.stop()


@pytest.fixture
def never_ready() -> Iterator[StandinProcess]:
    server = start_standin(extra_args=["--api-key", API_KEY], env={"STANDIN_NEVER_READY": "1"})
    yield server
    server.stop()


def metric_value(metrics_text: str, sample: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"sample {sample} not found in /metrics output:\n{metrics_text}")


def test_health_answers_before_ready(never_ready: StandinProcess) -> None:
    response = never_ready.request("GET", "/health")

    assert response.status == 200, "/health must answer 200 while the model is still loading"


def test_models_503_until_ready(never_ready: StandinProcess) -> None:
    response = never_ready.request("GET", "/v1/models", api_key=API_KEY)

    assert response.status == 503, "/v1/models must return 503 while the model is loading"
    assert response.json()["error"]["code"] == 503, "a 503 must carry an OpenAI error object"
    assert response.headers.get("Retry-After"), "a 503 should tell clients when to retry"


def test_never_ready_rejects_chat(never_ready: StandinProcess) -> None:
    response = never_ready.chat(
        {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}]}
    )

    assert response.status == 503, "chat completions must return 503 while the model is loading"


def test_models_lists_served_name(standin: StandinProcess) -> None:
    response = standin.request("GET", "/v1/models", api_key=API_KEY)
    payload = response.json()

    assert response.status == 200, f"/v1/models returned {response.status}: {response.body!r}"
    assert payload["object"] == "list", "the model list must use the OpenAI list format"
    assert [model["id"] for model in payload["data"]] == [SERVED_NAME], "wrong model ids"
    assert payload["data"][0]["object"] == "model", "each entry must be a model object"
    assert payload["data"][0]["root"] == "/model", "root must be the --model value"


def test_models_falls_back_to_model_arg() -> None:
    server = start_standin(served_name=None)
    try:
        payload = server.request("GET", "/v1/models").json()
    finally:
        server.stop()

    assert [model["id"] for model in payload["data"]] == ["/model"], (
        "without --served-model-name the model id must be the --model value"
    )


def test_models_requires_key(standin: StandinProcess) -> None:
    missing = standin.request("GET", "/v1/models")
    wrong = standin.request("GET", "/v1/models", api_key="not-the-key")

    assert missing.status == 401, "a request without the key must get 401"
    assert wrong.status == 401, "a request with a wrong key must get 401"
    assert missing.json()["error"]["code"] == 401, "a 401 must carry an OpenAI error object"
    assert "message" in missing.json()["error"], "the error object must have a message"


def test_api_key_from_environment() -> None:
    server = start_standin(env={"VLLM_API_KEY": API_KEY})
    try:
        without_key = server.request("GET", "/v1/models")
        with_key = server.request("GET", "/v1/models", api_key=API_KEY)
    finally:
        server.stop()

    assert without_key.status == 401, "VLLM_API_KEY must make the key required"
    assert with_key.status == 200, "the key from VLLM_API_KEY must be accepted"


def test_no_key_configured_allows_requests() -> None:
    server = start_standin()
    try:
        response = server.request("GET", "/v1/models")
    finally:
        server.stop()

    assert response.status == 200, "without a configured key no Authorization is needed"


def test_startup_delay_defers_ready() -> None:
    server = start_standin(env={"STANDIN_STARTUP_DELAY": "1.5"})
    try:
        first = server.request("GET", "/v1/models")
        waited = wait_until_ready(server, timeout_s=10)
        log = server.stop()
    finally:
        server.stop()

    assert first.status == 503, "the model must not be ready before the start-up delay passed"
    assert waited > 0.5, f"ready after {waited:.2f} s, expected about 1.5 s"
    assert "model ready" in log, "the ready event must be logged"


def test_invalid_startup_delay_exits() -> None:
    result = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "--model", "/model", "--port", str(free_port())],
        env={**os.environ, "STANDIN_STARTUP_DELAY": "soon"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert result.returncode == 2, "an invalid STANDIN_STARTUP_DELAY must exit with status 2"
    assert "STANDIN_STARTUP_DELAY" in result.stdout, "the error must name the variable"


def test_chat_completion_format(standin: StandinProcess) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to the lab"},
    ]
    response = standin.chat({"model": SERVED_NAME, "messages": messages})
    payload = response.json()
    choice = payload["choices"][0]

    assert response.status == 200, f"chat completion returned {response.status}: {response.body!r}"
    assert payload["id"].startswith("chatcmpl-"), "id must look like an OpenAI completion id"
    assert payload["object"] == "chat.completion", "object must be chat.completion"
    assert isinstance(payload["created"], int), "created must be a Unix timestamp"
    assert payload["model"] == SERVED_NAME, "model must echo the served name"
    assert choice["message"]["role"] == "assistant", "the reply must come from the assistant"
    assert choice["message"]["content"], "the reply must not be empty"
    assert choice["finish_reason"] == "stop", "a full reply must finish with stop"
    assert payload["usage"]["prompt_tokens"] == 8, "prompt tokens must count the message words"
    assert payload["usage"]["total_tokens"] == (
        payload["usage"]["prompt_tokens"] + payload["usage"]["completion_tokens"]
    ), "total_tokens must be the sum of prompt and completion tokens"


def test_chat_reply_is_deterministic(standin: StandinProcess) -> None:
    payload = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "ping"}]}

    first = standin.chat(payload).json()["choices"][0]["message"]["content"]
    second = standin.chat(payload).json()["choices"][0]["message"]["content"]

    assert first == second, "the same request must get the same reply"


def test_chat_max_tokens_truncates(standin: StandinProcess) -> None:
    response = standin.chat(
        {"model": SERVED_NAME, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 3}
    )
    payload = response.json()

    assert payload["usage"]["completion_tokens"] == 3, "max_tokens must cap the reply"
    assert payload["choices"][0]["finish_reason"] == "length", "a capped reply finishes with length"


def test_chat_without_key_401(standin: StandinProcess) -> None:
    response = standin.chat(
        {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}]}, api_key=None
    )

    assert response.status == 401, "chat completions without the key must get 401"


def test_chat_invalid_json_400(standin: StandinProcess) -> None:
    response = standin.request("POST", "/v1/chat/completions", b"{not json", API_KEY)

    assert response.status == 400, "invalid JSON must get 400"
    assert response.json()["error"]["code"] == 400, "a 400 must carry an OpenAI error object"


@pytest.mark.parametrize(
    "payload",
    [
        {"model": SERVED_NAME},
        {"model": SERVED_NAME, "messages": "hello"},
        {"model": SERVED_NAME, "messages": []},
        {"model": SERVED_NAME, "messages": ["hello"]},
        ["not", "an", "object"],
        {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ],
    ids=["missing", "string", "empty", "not-objects", "body-not-object", "stream"],
)
def test_chat_bad_request_400(standin: StandinProcess, payload: Any) -> None:
    response = standin.chat(payload)

    assert response.status == 400, f"payload {payload!r} must get 400, got {response.status}"


def test_chat_unknown_model_404(standin: StandinProcess) -> None:
    response = standin.chat(
        {"model": "other-model", "messages": [{"role": "user", "content": "hi"}]}
    )

    assert response.status == 404, "an unknown model name must get 404"
    assert "other-model" in response.json()["error"]["message"], "the error must name the model"


def test_unknown_route_404(standin: StandinProcess) -> None:
    response = standin.request("GET", "/v1/unknown", api_key=API_KEY)

    assert response.status == 404, "an unknown route must get 404"


def test_metrics_use_vllm_names(standin: StandinProcess) -> None:
    response = standin.request("GET", "/metrics")
    text = response.body.decode()
    labels = f'engine="0",model_name="{SERVED_NAME}"'

    assert response.status == 200, "/metrics must answer without a key"
    assert response.headers["Content-Type"].startswith("text/plain"), "metrics are Prometheus text"
    for sample in [
        f"vllm:num_requests_running{{{labels}}}",
        f"vllm:num_requests_waiting{{{labels}}}",
        f"vllm:kv_cache_usage_perc{{{labels}}}",
        f"vllm:prompt_tokens_total{{{labels}}}",
        f"vllm:generation_tokens_total{{{labels}}}",
        f'vllm:request_success_total{{{labels},finished_reason="stop"}}',
        f'vllm:request_success_total{{{labels},finished_reason="length"}}',
        f"vllm:time_to_first_token_seconds_count{{{labels}}}",
        f"vllm:inter_token_latency_seconds_count{{{labels}}}",
        f"vllm:e2e_request_latency_seconds_count{{{labels}}}",
        f'vllm:e2e_request_latency_seconds_bucket{{{labels},le="+Inf"}}',
    ]:
        assert metric_value(text, sample) == 0.0, f"{sample} must start at 0"
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text, "TTFT must be a histogram"
    assert "# TYPE vllm:prompt_tokens counter" in text, "prompt tokens must be a counter"


def test_metrics_counters_grow(standin: StandinProcess) -> None:
    # The stand-in is shared by the module's tests, so only the growth caused
    # by the two requests below is compared, never absolute values.
    labels = f'engine="0",model_name="{SERVED_NAME}"'
    payload = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "one two three"}]}
    samples = {
        "prompt": f"vllm:prompt_tokens_total{{{labels}}}",
        "generation": f"vllm:generation_tokens_total{{{labels}}}",
        "stop": f'vllm:request_success_total{{{labels},finished_reason="stop"}}',
        "length": f'vllm:request_success_total{{{labels},finished_reason="length"}}',
        "e2e": f"vllm:e2e_request_latency_seconds_count{{{labels}}}",
        "itl": f"vllm:inter_token_latency_seconds_count{{{labels}}}",
    }

    def read() -> dict[str, float]:
        text = standin.request("GET", "/metrics").body.decode()
        return {name: metric_value(text, sample) for name, sample in samples.items()}

    before = read()
    first = standin.chat(payload).json()
    standin.chat({**payload, "max_tokens": 2})
    after = read()
    growth = {name: after[name] - before[name] for name in samples}

    completion_tokens = first["usage"]["completion_tokens"]
    assert growth["prompt"] == 6.0, "3 + 3 prompt words"
    assert growth["generation"] == float(completion_tokens + 2), "the two replies add up"
    assert growth["stop"] == 1.0, "one request finished with stop"
    assert growth["length"] == 1.0, "one request finished with length"
    assert growth["e2e"] == 2.0, "each request adds one e2e latency observation"
    # The replies had completion_tokens and 2 tokens, so (completion_tokens - 1) + 1 intervals.
    assert growth["itl"] == float(completion_tokens), "one observation per token after the first"


def test_accepts_vllm_and_unknown_args() -> None:
    server = start_standin(
        extra_args=[
            "--tensor-parallel-size",
            "4",
            "--max-model-len",
            "32768",
            "--gpu-memory-utilization",
            "0.90",
            "--enable-chunked-prefill",
            "true",
            "--dtype",
            "bfloat16",
        ]
    )
    try:
        payload = server.request("GET", "/v1/models").json()
    finally:
        log = server.stop()

    assert payload["data"][0]["max_model_len"] == 32768, "--max-model-len must be reported"
    assert (
        "ignoring unsupported arguments: --enable-chunked-prefill true --dtype bfloat16" in log
    ), "unknown arguments must be logged"
    assert "tensor_parallel_size=4" in log, "the start-up line must show the parsed settings"


def test_logs_requests_without_key(standin: StandinProcess) -> None:
    standin.request("GET", "/v1/models", api_key=API_KEY)
    standin.request("GET", "/v1/models", api_key="wrong-key")
    log = standin.stop()

    assert '"GET /v1/models HTTP/1.1" 200' in log, "each request line must be logged"
    assert "listening on 127.0.0.1" in log, "the start event must be logged"
    assert "GET /v1/models rejected with 401" in log, "a rejected request must log its reason"
    assert API_KEY not in log, "the API key must never be logged"
    assert "wrong-key" not in log, "a key sent by a client must never be logged"


def test_sigterm_stops_promptly(standin: StandinProcess) -> None:
    started = time.monotonic()
    log = standin.stop()
    elapsed = time.monotonic() - started

    assert standin.process.returncode == 0, f"SIGTERM must end with status 0:\n{log}"
    assert elapsed < 3, f"SIGTERM took {elapsed:.1f} s, expected under 3 s"
    assert "received SIGTERM" in log, "the shutdown must be logged"
