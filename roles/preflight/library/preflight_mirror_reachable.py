#!/usr/bin/python
"""Ansible module that checks from the host that mirror URLs respond over HTTP."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import IO, TypedDict

from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]

DOCUMENTATION = r"""
---
module: preflight_mirror_reachable
short_description: Check that mirror URLs respond to HTTP requests from the host
description:
  - Sends one GET request to each URL, all at the same time, and reads only the status line and
    headers. Any HTTP response with a status below 500 counts as reachable, because the root of a
    mirror may respond with 401, 403 or 404. Redirects are not followed, since the redirect itself
    proves that the mirror responds.
  - A URL that gets no response within O(timeout) seconds counts as timed out, so the whole check
    takes at most O(timeout) seconds plus a moment to start the requests, however many URLs there
    are.
  - Honours the C(http_proxy), C(https_proxy) and C(no_proxy) variables of the module's
    environment, like other urllib clients. TLS certificates are verified against the host's CA
    store.
  - A C(user:password@) part of a URL is not sent, because a response without credentials (such
    as 401) already proves that the mirror is reachable. The returned URLs have it replaced by
    C(***@).
  - Reads only; it never changes the host.
options:
  urls:
    description: C(http://) or C(https://) URLs to check.
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds each URL has to respond.
    type: float
    default: 10
"""

EXAMPLES = r"""
- name: Check the registry mirror and the Hugging Face endpoint
  preflight_mirror_reachable:
    urls:
      - https://registry.mirror.example
      - https://hf-mirror.example
    timeout: 10
  register: __preflight_mirrors
"""

RETURN = r"""
mirrors:
  description: One entry per URL, in the order given.
  type: list
  elements: dict
  returned: always
  sample:
    - url: https://***@registry.mirror.example/
      reachable: false
      status: 0
      reason: connection refused
not_reachable:
  description: The entries of RO(mirrors) whose URL did not respond.
  type: list
  elements: dict
  returned: always
"""

USER_AGENT = "oneclick-preflight"
ALLOWED_SCHEMES = ("http", "https")


class ProbeResult(TypedDict):
    url: str
    reachable: bool
    status: int
    reason: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirect handler that turns every 3xx response into an HTTPError instead of following it."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def replace_userinfo(url: str, replacement: str) -> str:
    """Return url with any user:password@ part replaced by replacement ("" or ending in @)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{replacement}{host}"))


def mask_url(url: str) -> str:
    """Return url with any user:password@ part replaced by ***@."""
    return replace_userinfo(url, "***@")


def describe_error(error: BaseException) -> str:
    """Turn a failed request's exception into a short reason such as "connection refused"."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason

    if isinstance(error, socket.gaierror):
        return f"name not resolved ({error.strerror})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS error: certificate not trusted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, ConnectionResetError):
        return "connection closed by the server"
    if isinstance(error, http.client.HTTPException):
        return f"invalid HTTP response ({type(error).__name__})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def probe_url(url: str, timeout_s: float) -> ProbeResult:
    """Send one GET request to url and classify the response.

    Network, URL and HTTP protocol errors become an unreachable result with a reason instead of
    an exception.
    """
    masked = mask_url(url)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ALLOWED_SCHEMES:
        return ProbeResult(
            url=masked, reachable=False, status=0, reason="not an http:// or https:// URL"
        )

    opener = urllib.request.build_opener(_NoRedirect)
    # urllib would take user:password@ for part of the host name.
    request = urllib.request.Request(
        replace_userinfo(url, ""), method="GET", headers={"User-Agent": USER_AGENT}
    )
    try:
        with opener.open(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = int(error.code)
        error.close()
    except (OSError, ValueError, http.client.HTTPException) as error:
        return ProbeResult(url=masked, reachable=False, status=0, reason=describe_error(error))

    if status >= 500:
        return ProbeResult(
            url=masked, reachable=False, status=status, reason=f"server error (HTTP {status})"
        )
    return ProbeResult(url=masked, reachable=True, status=status, reason=f"HTTP {status}")


def probe_urls(urls: list[str], timeout_s: float) -> list[ProbeResult]:
    """Probe every URL in parallel and return the results in the order of urls.

    Each request runs in a daemon thread. The socket timeout does not cover DNS lookups, so a
    thread can outlive it. A thread that has not finished timeout_s seconds after the start is
    reported as timed out and left behind, and the call returns after about timeout_s at most.
    """
    results: list[ProbeResult | None] = [None] * len(urls)

    def run_probe(index: int, url: str) -> None:
        results[index] = probe_url(url, timeout_s)

    threads = [
        threading.Thread(target=run_probe, args=(index, url), daemon=True)
        for index, url in enumerate(urls)
    ]
    for thread in threads:
        thread.start()

    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    return [
        result
        if result is not None
        else ProbeResult(url=mask_url(url), reachable=False, status=0, reason="timed out")
        for url, result in zip(urls, results, strict=True)
    ]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "urls": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "float", "default": 10},
        },
        supports_check_mode=True,
    )
    timeout_s: float = module.params["timeout"]
    if timeout_s <= 0:
        module.fail_json(msg=f"timeout must be greater than 0 seconds, got {timeout_s}")

    # "results" and "unreachable" are names that Ansible reads as a loop's results and as an
    # unreachable host, so the return values are named differently.
    results = probe_urls(module.params["urls"], timeout_s)
    module.exit_json(
        changed=False,
        mirrors=results,
        not_reachable=[result for result in results if not result["reachable"]],
    )


if __name__ == "__main__":
    main()
