#!/usr/bin/env bash
# Installs what voicemon needs on a fresh Debian machine with Python 3.11, Java 17 and Maven:
# Debian's redis-server (and prometheus, promtool and amtool for the alert and dashboard
# tests), the Python package with its dev extras, and the Apache Kafka broker jars from
# Maven Central. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

if ! ls deploy/local/kafka/lib/kafka_2.13-*.jar >/dev/null 2>&1; then
  mvn -q -B -f deploy/local/kafka/pom.xml package
fi
echo "voicemon installed"
