#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for pytest-hermetic's tests; idempotent.
#   - Debian packages the tests use for real (busybox-static for a tiny image,
#     uidmap for rootless subordinate ids, bubblewrap/crun for the benchmark;
#     docker-registry, skopeo, umoci, debootstrap, apache2-utils' htpasswd and
#     openssl for the image tests)
#   - an unprivileged user with /etc/subuid ranges for the rootless checks
#   - .venv: a virtual environment (Debian's python3, readable by that user)
#     with the package installed in editable mode
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(busybox-static uidmap python3-venv python3-dev iproute2 bubblewrap crun util-linux nftables slirp4netns
          docker-registry skopeo umoci debootstrap apache2-utils openssl)
PACKAGES+=(zsh)  # tests/test_completion.py: the zsh completion script under zsh itself
PACKAGES+=(fish)  # tests/test_completion.py: the fish completion script under fish itself
PACKAGES+=(buildah)  # hermetic build's reference: tests/test_build.py compares its images with buildah bud's
PACKAGES+=(gcc libc6-dev)  # hermetic build's tests compile a static C program in a build stage on `host`
PACKAGES+=(runc)  # bench/container_cost.py: `hermetic run` against runc (issue #16)
PACKAGES+=(linux-perf)  # bench/cpu_paths.py (tests/test_bench_cpu_paths.py): a test's CPU by kernel path
PACKAGES+=(erofs-utils)  # fsck.erofs/dump.erofs check the layer images the store writes (tests/images/test_erofs*.py)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the registry it packages as a service on :5000 (all interfaces);
    # the tests start their own on 127.0.0.1 and free ports, so stop the one we caused.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null \
            && systemctl is-active --quiet docker-registry 2>/dev/null; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
fi

TEST_USER=${HERMETIC_TEST_USER:-hermetic-test}
if ! id "$TEST_USER" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "/var/lib/$TEST_USER" --shell /bin/sh "$TEST_USER"
fi
for file in /etc/subuid /etc/subgid; do
    touch "$file"
    grep -q "^$TEST_USER:" "$file" || echo "$TEST_USER:300000:65536" >> "$file"
done

# Rootless networks: slirp4netns opens /dev/net/tun as the user. udev gives it
# mode 0666 on most distributions; a machine without udev keeps the kernel's
# 0600 (`hermetic doctor` says so).
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    chmod 0666 /dev/net/tun
fi

if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
# (also when the console script predates its entry point pytest_hermetic.cli:console, and
# when the native child's C extension is missing or of another version than its Python side)
if ! .venv/bin/python -c 'import pytest_hermetic, ipython_ext, pyroute2, zstandard, pytest, xdist, pytest_forked, pytest_timeout, pytest_cov, pytest_rerunfailures, IPython, ipykernel, nbclient, nbformat, mypy' 2>/dev/null \
        || ! grep -q 'import console' .venv/bin/hermetic 2>/dev/null \
        || ! .venv/bin/python -c 'from pytest_hermetic.runtime import native_child as n; assert n.state() != "missing"' 2>/dev/null; then
    log=$(mktemp)
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[test]' pytest-xdist --config-settings editable_mode=compat; } >"$log" 2>&1; then
        cat "$log"; rm -f "$log"; exit 1
    fi
    rm -f "$log"
fi
# A `python3` kernelspec inside the venv naming the venv's python by its full
# path (`ipykernel install` writes plain "python", which jupyter_client
# replaces with whatever python launches the kernel).
spec=.venv/share/jupyter/kernels/python3/kernel.json
if ! grep -q "$PWD/.venv/bin/python" "$spec" 2>/dev/null; then
    mkdir -p "$(dirname "$spec")"
    printf '{"argv": ["%s", "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "Python 3 (pytest-hermetic .venv)", "language": "python"}\n' \
        "$PWD/.venv/bin/python" > "$spec"
fi
echo "install-deps: ready (.venv, user $TEST_USER, ${#PACKAGES[@]} packages)"
