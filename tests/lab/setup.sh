#!/usr/bin/env bash
# Prepare this machine for the lab tests: a Docker engine, the Debian 12
# systemd base image that stands in for an appliance, and the fixture images.
# Safe to re-run: each step is skipped when its result is already there.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
base_image="${ONECLICK_LAB_BASE_IMAGE:-oneclick-lab/debian12-systemd:latest}"
debian_mirror="${ONECLICK_LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
dockerd_log="${ONECLICK_LAB_DOCKERD_LOG:-/var/log/oneclick-lab-dockerd.log}"

log() { printf '[lab] %s\n' "$*"; }

install_host_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v msgfmt >/dev/null || missing+=(gettext)
    command -v dpkg-scanpackages >/dev/null || missing+=(dpkg-dev)
    # promtool and amtool check alert rules, dashboard queries and the
    # Alertmanager configuration in the unit tests.
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        # Only the tools are needed here, so a policy-rc.d that denies every
        # start keeps the packages' services (prometheus) from running.
        local policy=/usr/sbin/policy-rc.d created_policy=false
        if [[ ! -e ${policy} ]]; then
            printf '#!/bin/sh\nexit 101\n' >"${policy}"
            chmod 0755 "${policy}"
            created_policy=true
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        if [[ ${created_policy} == true ]]; then
            rm -f "${policy}"
        fi
    fi
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    # The lab machine has no systemd, so the engine runs as a plain process.
    log "starting dockerd (log: ${dockerd_log})"
    nohup dockerd >"${dockerd_log}" 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    log "dockerd did not answer within 60 s; last lines of ${dockerd_log}:"
    tail -n 20 "${dockerd_log}" >&2
    exit 1
}

build_base_image() {
    if docker image inspect "${base_image}" >/dev/null 2>&1; then
        return
    fi
    log "building ${base_image} with debootstrap (about a minute)"
    local rootfs
    rootfs="$(mktemp -d /var/tmp/oneclick-lab-rootfs.XXXXXX)"
    trap 'rm -rf "${rootfs}"' RETURN
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,python3,python3-apt,sudo,ca-certificates,iproute2,procps \
        bookworm "${rootfs}" "${debian_mirror}" >/dev/null
    # Containers reach the Debian mirror through the engine's NAT; the image
    # keeps no apt lists so every test host starts from a clean state.
    rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/archives/*.deb
    tar -C "${rootfs}" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "${base_image}" >/dev/null
}

build_fixture_images() {
    local dir name
    for dir in "${repo_root}"/tests/fixtures/images/*/; do
        [[ -f "${dir}/Dockerfile" ]] || continue
        name="oneclick-fixture/$(basename "${dir}"):test"
        log "building fixture image ${name}"
        docker build -q --build-arg "BASE_IMAGE=${base_image}" -t "${name}" "${dir}" >/dev/null
    done
}

install_host_packages
start_engine
build_base_image
build_fixture_images
log "ready: engine $(docker version --format '{{.Server.Version}}'), base image ${base_image}"
