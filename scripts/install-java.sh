#!/usr/bin/env bash
# Installs Debian's JDK for the Lucene backend (pyserini's Anserini runs in the JVM through pyjnius).
# Idempotent: does nothing when a JDK of version 11 or later is already the default `java`.
# Debian 12 ships openjdk-17; pyserini <= 0.25 (Anserini on Java 11) runs on it, pyserini >= 0.35
# needs Java 21, which Debian 12 does not package (hence the `<0.35` in pyproject's `lucene` extra).
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
  if [ "${major:-0}" -ge 11 ]; then
    exit 0
  fi
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless >/dev/null
java -version
