#!/usr/bin/env bash
# Installs audio_interaction and everything it needs on a fresh Debian/Ubuntu machine.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: speech engines (espeak-ng is required, the others add voices) and
# the sound recordings the corpus builder mixes in (optional: it falls back to
# procedural sounds without them), and PortAudio for live microphone input.
DEBIAN_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
                 # tcmalloc: XLA:CPU train steps 1.33-1.46x faster than under glibc malloc (apps/cpu_host.py).
                 libtcmalloc-minimal4
                 tuxpaint-stamps-default sound-theme-freedesktop klettres-data ktuberling-data
                 libportaudio2
                 # The serve page's browser test (tests/test_serve_page.py).
                 chromium chromium-driver)
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
