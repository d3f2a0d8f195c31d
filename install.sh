#!/usr/bin/env bash
# Installs audio_interaction and everything it needs on a fresh Debian/Ubuntu machine.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: speech engines and sound recordings the corpus builder uses.
DEBIAN_PACKAGES=(espeak-ng)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python -m pip install -q --disable-pip-version-check -e ".[test]"
