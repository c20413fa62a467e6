#!/usr/bin/env bash
# Regenerates the committed locks, requirements/*.lock, from pyproject.toml with pip-compile
# (pip-tools, in .venv): every version pinned, every file hashed. `make lock` runs it; extra
# arguments go to pip-compile, e.g. `make lock ARGS=--upgrade` or `ARGS="-P fastapi"`.
#
#   dev.lock       every extra + the build backend: what install.sh and CI install
#   producer-py3.11.lock, -py3.12.lock, -py3.13.lock
#                  the voicemon-producer distribution (producer/pyproject.toml), one lock per
#                  supported CPython (wheels differ by version), each compiled by that Python
#   api.lock       voicemon[api]       the API image
#   worker.lock    voicemon[worker]    the worker image (ClickHouse server, no chDB)
#   embedded.lock  voicemon[worker,embedded]  the single-host image with chDB
#   build.lock     the build backend that turns the source into the image's wheel
#
# The role locks start from a copy of dev.lock, which pip-compile takes as its preferred pins:
# every role pins the same version of a package as dev.lock does (tests/unit/test_install.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

COMPILER=${COMPILER:-.venv/bin/pip-compile}  # not PIP_*: pip reads those as its options
export CUSTOM_COMPILE_COMMAND="make lock"

compile() {
  local out=$1
  shift
  "$COMPILER" --quiet --generate-hashes --reuse-hashes --allow-unsafe --strip-extras \
    --no-emit-find-links --no-emit-index-url --output-file "$out" "$@" "${PROJECT:-pyproject.toml}"
  # pip-compile writes the project itself for a self-referencing extra (voicemon[cli] in
  # voicemon[api]; pip-tools issue 2002): the project is installed from the source, not the lock.
  awk '
    /^# WARNING: pip install will require the following package to be hashed/ { next }
    /^# Consider using a hashable URL/ { next }
    /^voicemon @ / { skip = 1; next }
    skip && /^    / { next }
    { skip = 0; print }
  ' "$out" >"$out.tmp"
  mv "$out.tmp" "$out"
}

compile requirements/dev.lock --all-extras --all-build-deps "$@"
for role in api worker embedded; do
  cp requirements/dev.lock "requirements/$role.lock"
done
compile requirements/api.lock --extra api
compile requirements/worker.lock --extra worker
compile requirements/embedded.lock --extra worker --extra embedded
cp requirements/dev.lock requirements/build.lock
compile requirements/build.lock --build-deps-for wheel --only-build-deps
# The producer distribution, with each supported CPython found here (python3.X on PATH, or
# pyenv's); pip-tools for it is installed into var/lock-py3.X. A version not found keeps its
# lock as it is, and says so.
for version in 3.11 3.12 3.13; do
  python=""
  for candidate in $(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python 2>/dev/null | sort -r) \
    $(command -v "python$version" || true); do
    if "$candidate" -c 'import venv' >/dev/null 2>&1; then  # a pyenv shim may not run
      python=$candidate
      break
    fi
  done
  if [ -z "$python" ]; then
    echo "python$version not found: requirements/producer-py$version.lock left as it is" >&2
    continue
  fi
  tools=var/lock-py$version
  if [ ! -x "$tools/bin/pip-compile" ]; then
    "$python" -m venv "$tools"
    "$tools/bin/pip" install -q "pip-tools>=7.4,<8"
  fi
  COMPILER=$tools/bin/pip-compile PROJECT=producer/pyproject.toml \
    compile "requirements/producer-py$version.lock"
done
echo "requirements/*.lock regenerated"
