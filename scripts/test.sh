#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian/Ubuntu machine, then run it.
#   system packages (apt): see SYSTEM_PACKAGES below (sudo is used when not root)
#   Python: a virtual environment in .venv with livefoley installed editable, plus test tools
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  python3-venv python3-tk          # the virtual environment; Tk paints test pictures on Xvfb
  libportaudio2 libsndfile1        # sounddevice / soundfile
  pulseaudio pulseaudio-utils      # a real sound server with a null sink for the audio tests
  xvfb                             # a real X server for the screen-capture and OBS tests
  obs-studio                       # real OBS Studio (obs-websocket 5) for the OBS tests
)

sudo_cmd=()
[ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
missing=()
for p in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing livefoley and test tools into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
