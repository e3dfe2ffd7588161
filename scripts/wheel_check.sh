#!/usr/bin/env bash
# The package as a user gets it: a wheel built from a clean copy of this
# checkout (the files git tracks or would track: no .venv, no build output),
# installed into a fresh venv of Debian's python3 (no repository on
# sys.path), then tried from an empty folder:
#   - the metadata `pip show` prints (author, license, home page, classifiers),
#     py.typed and LICENSE in the wheel, no test-only package in it;
#   - the CLI: `hermetic run host true` (console script: cli:console, no argparse/re/json/enum imported),
#     `hermetic import busybox: bb:1`, a run of it;
#   - the plugin: `pytest -p hermetic` on a small test file with @hermetic marks;
#   - the magics: `%load_ext ipython_ext` and a `%%container` cell in `ipython -c`.
# As root; it uses a private store and state folder and removes everything.
#
#   bash scripts/wheel_check.sh        # what scripts/test runs
set -euo pipefail
cd "$(dirname "$0")/.."

# Under /var/tmp, not /tmp: a container of the host image gets a fresh /tmp,
# and the plugin's forked tests need the venv inside their containers.
work=$(mktemp -d /var/tmp/hermetic-wheel-check.XXXXXX)
cleanup() {
    # The store goes first, then a gc of it detaches its layer images' mounts (root's default:
    # EROFS images, mounted below the machine's state folder, not in the store).
    rm -rf "$work/store"
    HERMETIC_STORE=$work/store HERMETIC_STATE=$work/state "$work/venv/bin/hermetic" gc -q 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
start=$SECONDS

echo "-- the wheel, from a clean copy of the checkout"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work/src"
.venv/bin/pip wheel -q --no-deps -w "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; echo "wheel_check: the wheel did not build"; exit 1; }
wheel=$(ls "$work"/dist/pytest_hermetic-*.whl)
listing=$(python3 -m zipfile -l "$wheel")
for member in pytest_hermetic/py.typed ipython_ext/py.typed pytest_hermetic/images/busybox.py licenses/LICENSE; do
    grep -q "$member" <<<"$listing" || { echo "wheel_check: $member is not in $(basename "$wheel")"; exit 1; }
done
if grep -q -E 'hermetic_testsupport|^tests/' <<<"$listing"; then
    echo "wheel_check: the wheel ships test-only files"; exit 1
fi

echo "-- a fresh venv (Debian's python3), the wheel with its notebook extra, pytest"
/usr/bin/python3 -m venv "$work/venv"
# A current pip, as users have: Debian's (23.0) `pip show` prints neither
# License-Expression nor the Homepage of Project-URL.
{ "$work/venv/bin/pip" install -q --disable-pip-version-check --upgrade pip &&
  "$work/venv/bin/pip" install -q --disable-pip-version-check "$wheel[notebook]" pytest; } >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; echo "wheel_check: the wheel did not install"; exit 1; }

mkdir "$work/try"
cd "$work/try"
export HERMETIC_STORE=$work/store HERMETIC_STATE=$work/state HERMETIC_OFFLINE=1
export PATH=$work/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH VIRTUAL_ENV
fail() { echo "wheel_check: $*"; exit 1; }

shown=$(pip show pytest-hermetic)
for field in "Author: The pytest-hermetic developers" "License-Expression: MIT" "Home-page: https://"; do
    grep -q "^$field" <<<"$shown" || { echo "$shown"; fail "pip show lacks '$field'"; }
done
python - <<'EOF' || fail "metadata"
import importlib.metadata as m, os, re, sys
import pytest_hermetic
assert "/venv/" in pytest_hermetic.__file__, pytest_hermetic.__file__  # the installed copy, not a checkout
meta = m.metadata("pytest-hermetic")
classifiers = meta.get_all("Classifier")
for wanted in ("Framework :: Pytest", "Framework :: Jupyter", "Framework :: IPython", "Typing :: Typed",
               "Operating System :: POSIX :: Linux", "Topic :: Software Development :: Testing"):
    assert wanted in classifiers, wanted
assert not re.search(r"\]\((\.\./|https?:)", meta.get_payload()), "the long description links outside the repository"
try:
    import hermetic_testsupport
    sys.exit("hermetic_testsupport is importable from the wheel's venv")
except ImportError:
    pass
EOF

echo "-- the CLI"
[ "$(hermetic run host sh -c 'echo $$')" = 1 ] || fail "hermetic run host: not PID 1"
hermetic run host true || fail "hermetic run host true"
# The entry point pip made: console() (the quick exit), and a quick `run` imports none of argparse, re, json, enum.
grep -q "from pytest_hermetic.cli import console" "$work/venv/bin/hermetic" || fail "the console script does not call cli:console"
slow=$(PYTHONPROFILEIMPORTTIME=1 hermetic run host true 2>&1 | grep -E '[|] +(argparse|re|json|enum)$' || true)
[ -z "$slow" ] || fail "hermetic run host true imports what its quick path should not: $slow"
hermetic import busybox: bb:1 >/dev/null || fail "hermetic import busybox: bb:1"
[ "$(hermetic run bb:1 sh -c 'readlink /bin/sh; test -e /usr/bin/python3 || echo no-python')" = "busybox
no-python" ] || fail "a run of the busybox image"
hermetic completion bash >/dev/null || fail "hermetic completion bash"

echo "-- the plugin (pytest -p hermetic)"
cat > test_wheel_plugin.py <<'EOF'
import os
from pytest_hermetic import hermetic

@hermetic(mem="64M", timeout=30)
def test_in_a_container():
    assert os.getpid() == 2  # PID 2 under the container's init

@hermetic(image="bb:1")
def test_in_the_busybox_image():
    assert not os.path.exists("/usr/lib/os-release")

def test_in_place():
    assert os.getpid() != 2
EOF
python -m pytest -p hermetic -p no:cacheprovider -q test_wheel_plugin.py >"$work/pytest.log" 2>&1 \
    || { cat "$work/pytest.log"; fail "pytest -p hermetic"; }
grep -q "3 passed" "$work/pytest.log" || { cat "$work/pytest.log"; fail "pytest -p hermetic: not 3 passed"; }

echo "-- the magics (ipython -c, %load_ext ipython_ext)"
out=$(ipython --no-banner --colors=NoColor -c '
get_ipython().run_line_magic("load_ext", "ipython_ext")
get_ipython().run_cell_magic("container", "bb:1", "echo hello from $(cat /etc/hostname | wc -c) busybox; readlink /bin/sh")
get_ipython().run_line_magic("unload_ext", "ipython_ext")
' 2>&1) || { echo "$out"; fail "ipython with the magics"; }
grep -q "^busybox$" <<<"$out" || { echo "$out"; fail "the %%container cell did not run in bb:1"; }

echo "wheel_check: ok ($((SECONDS - start)) s)"
