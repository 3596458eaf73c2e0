"""Ansible action plugin: check on the controller that the driver can start the engine image.

It reads the image's environment from a community.docker.docker_image_info result and
decides with oneclick.cuda, the same code the CLI uses, whether the NVIDIA container
runtime will accept the image's NVIDIA_REQUIRE_CUDA on this driver and GPU brand.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase  # type: ignore[import-untyped]

from oneclick.cuda import (
    CudaRequirementError,
    brand_from_gpu_name,
    check_cuda_compat,
    image_env,
)

DOCUMENTATION = r"""
---
module: oneclick_cuda_compat
short_description: Check an image's NVIDIA_REQUIRE_CUDA against the host's driver
description:
  - Runs on the controller and reads only task arguments.
  - Returns C(skipped) when the driver version is empty (no NVIDIA driver on the host).
options:
  image:
    description: Image reference, for messages.
    type: str
    required: true
  images:
    description: The C(images) list of a community.docker.docker_image_info result.
    type: list
    elements: dict
    required: true
  driver_version:
    description: NVIDIA driver version of the host, such as 535.261.03; empty skips.
    type: str
    default: ""
  gpu_name:
    description: Product name of the host's GPUs, used to tell the GPU brand.
    type: str
    default: ""
  fail_on_mismatch:
    description: Fail the task when the image cannot start on this driver.
    type: bool
    default: true
"""

RETURN = r"""
status:
  description: satisfied, forward-compat, unsatisfied or no-requirement.
  type: str
message:
  description: The verdict with both CUDA versions and, on a mismatch, both ways out.
  type: str
image_cuda:
  description: CUDA version the image requires, or null.
  type: str
driver_cuda:
  description: Newest CUDA version the driver supports natively, or null.
  type: str
minimum_driver:
  description: Lowest driver that runs the image's CUDA version natively, or null.
  type: str
minimum_branch:
  description: Driver branch of minimum_driver, such as R570, or null.
  type: str
"""

ARGUMENT_SPEC: dict[str, Any] = {
    "image": {"type": "str", "required": True},
    "images": {"type": "list", "elements": "dict", "required": True},
    "driver_version": {"type": "str", "default": ""},
    "gpu_name": {"type": "str", "default": ""},
    "fail_on_mismatch": {"type": "bool", "default": True},
}


def evaluate(
    image: str, images: list[dict[str, Any]], driver_version: str, gpu_name: str
) -> dict[str, Any]:
    """Return the task result without Ansible around it, so it can be unit-tested."""
    if not driver_version.strip():
        return {
            "skipped": True,
            "skip_reason": "No NVIDIA driver version is known for this host, so the image's "
            "CUDA requirement was not checked.",
        }
    if not images:
        return {
            "failed": True,
            "msg": f"The image {image} is not present on the host, so its CUDA requirement "
            "cannot be read. Run the inference role's install phase first.",
        }

    try:
        result = check_cuda_compat(
            image_env(images[0]), driver_version.strip(), brand_from_gpu_name(gpu_name), image
        )
    except CudaRequirementError as error:
        return {"failed": True, "msg": str(error)}

    return {
        "compatible": result.ok,
        "status": str(result.status),
        "message": result.message,
        "image_cuda": result.image_cuda,
        "driver_version": result.driver_version,
        "driver_cuda": result.driver_cuda,
        "brand": result.brand,
        "matched": result.matched,
        "minimum_driver": result.minimum_driver,
        "minimum_branch": result.minimum_branch,
    }


class ActionModule(ActionBase):  # type: ignore[misc]
    """Compare the image's CUDA requirement with the driver; never touches the host."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> Any:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)

        result.update(
            evaluate(args["image"], args["images"], args["driver_version"], args["gpu_name"])
        )
        result["changed"] = False
        if args["fail_on_mismatch"] and result.get("compatible") is False:
            result["failed"] = True
            result["msg"] = result["message"]
        return result
