#!/usr/bin/env bash
# Installs what voicemon needs on a fresh Debian machine with Python 3.11, Java 17 and Maven:
# Debian's redis-server and redis-sentinel (and prometheus, promtool and amtool for the alert and dashboard
# tests, python3-venv if `venv` cannot make an environment), a virtual environment .venv in
# the project root holding exactly the versions of requirements/dev.lock (hash-checked) and
# voicemon itself (editable), the Apache Kafka broker jars from Maven Central, and helm (built
# from its Go module into .tools/bin).
# Idempotent; the system Python is never touched.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)  # the failover tests
command -v prometheus >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# A .venv whose interpreter no longer runs (moved, or its Python removed) is made anew.
if [ -e .venv ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  rm -rf .venv
fi
if [ ! -e .venv ]; then
  # Debian's Python makes no environment without python3-venv (ensurepip is split out).
  if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi

# Skipped when neither the lock nor pyproject.toml changed since the last install here.
stamp=$(cat requirements/dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.voicemon-installed 2>/dev/null)" != "$stamp" ]; then
  pip=(.venv/bin/python -m pip --disable-pip-version-check)
  "${pip[@]}" install -q --require-hashes -r requirements/dev.lock
  "${pip[@]}" install -q --no-deps --no-build-isolation -e .
  echo "$stamp" >.venv/.voicemon-installed
fi

if ! ls deploy/local/kafka/lib/kafka_2.13-*.jar >/dev/null 2>&1; then
  mvn -q -B -f deploy/local/kafka/pom.xml package
fi
# helm, for the chart's tests (tests/unit/test_helm_chart.py runs `helm template`), built from
# its Go module into .tools/bin (gitignored) once: no binary download, the Go toolchain checks
# the module's sums. Needs Go (the machine's, or /usr/local/go).
HELM_VERSION=v3.22.0
if [ ! -x .tools/bin/helm ]; then
  go=$(command -v go || echo /usr/local/go/bin/go)
  if [ ! -x "$go" ]; then
    echo "install.sh: Go is needed to build helm $HELM_VERSION (apt-get install golang-go, or go.dev/dl)" >&2
    exit 1
  fi
  GOFLAGS=-mod=mod GOBIN="$PWD/.tools/bin" "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
echo "voicemon installed in .venv (activate: . .venv/bin/activate)"
