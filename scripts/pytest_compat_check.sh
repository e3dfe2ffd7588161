#!/usr/bin/env bash
# The plugin's tests against another pytest than .venv's: the plugin uses a
# few of pytest's private functions (all in pytest_hermetic/_pytest_compat.py),
# so a pytest release can break it without any change here.
#
#   bash scripts/pytest_compat_check.sh                  # pytest's newest release on PyPI (what scripts/test runs)
#   bash scripts/pytest_compat_check.sh 'pytest==8.4.2'  # a release (any pip requirement)
#   bash scripts/pytest_compat_check.sh /tmp/pytest-main # a source tree: pytest's main branch
#
# pytest's main branch is not on PyPI; with access to GitHub, a tree of it:
#
#   git clone --depth 1 https://github.com/pytest-dev/pytest /tmp/pytest-main
#
# (or `git --git-dir=MIRROR archive HEAD | tar -x -C /tmp/pytest-main` from a
# mirror).  A source tree gets SETUPTOOLS_SCM_PRETEND_VERSION=9.99.dev0 unless
# that is set: a tree without .git has no version of its own.
#
# Each run makes a throwaway venv (from .venv's base interpreter) with that
# pytest, this repo (editable), pytest-xdist, pytest-timeout and pytest-cov
# (and pytest-subtests before pytest 9);
# runs tests/test_plugin.py and tests/security/test_bad_input_marker.py (more
# arguments go to pytest), then removes the venv.  Exit status: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-pytest}
[ $# -gt 0 ] && shift

base=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
# Under /var/tmp, not /tmp: a fresh /tmp in each container would hide it.
venv=$(mktemp -d /var/tmp/hermetic-pytest-compat.XXXXXX)
trap 'rm -rf "$venv"' EXIT
chmod 755 "$venv"  # the rootless tests run it as an unprivileged user
"$base" -m venv "$venv"

if [ -d "$target" ]; then
    requirement=$(cd "$target" && pwd)
    export SETUPTOOLS_SCM_PRETEND_VERSION=${SETUPTOOLS_SCM_PRETEND_VERSION:-9.99.dev0}
    upgrade=()
else
    requirement=$target
    upgrade=(--upgrade)  # the newest release, not one pip finds cached
fi
# One resolution, so the plugins cannot swap the pytest asked for.
"$venv/bin/pip" install -q "${upgrade[@]}" "$requirement" -e . pytest-xdist pytest-timeout pytest-cov \
    --config-settings editable_mode=compat

# Before pytest 9 the `subtests` fixture (which the plugin tests use) was a plugin.
if "$venv/bin/python" -c 'import pytest, sys; sys.exit(int(pytest.__version__.split(".")[0]) >= 9)'; then
    "$venv/bin/pip" install -q pytest-subtests
fi

echo "== the plugin against $("$venv/bin/python" -m pytest --version 2>&1) ($target)"
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/test_plugin.py tests/security/test_bad_input_marker.py "$@"
