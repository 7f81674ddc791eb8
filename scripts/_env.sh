# Sourced by the other scripts: create .venv (Python >= 3.11) and install tracemark into it.
# Usage: . scripts/_env.sh [extras]   e.g. ". scripts/_env.sh dev"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"

pick_python() {
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "tracemark needs Python >= 3.11 (none found on PATH)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  if ! "$py" -m venv .venv 2>/dev/null; then
    # Debian ships venv/ensurepip separately.
    echo "venv is unavailable; installing Debian's python3-venv" >&2
    rm -rf .venv
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null; fi
    "$py" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
fi
case ",$extras," in
  *,dev,*)
    # the PDQ reference used as a test oracle (pdqhash) builds from source
    if ! command -v g++ >/dev/null 2>&1; then
      echo "installing Debian's build-essential (a C++ compiler for the pdqhash test oracle)" >&2
      if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
      else sudo apt-get update -qq && sudo apt-get install -y -qq build-essential >/dev/null; fi
    fi
    ;;
esac
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install -q -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true
case ",$extras," in
  *,peers,*)
    # invisible-watermark pulls the GUI build of OpenCV, which shares the cv2 folder with
    # the headless build tracemark uses: put the headless files back on top.
    v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('opencv-python-headless'))")
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$v" 2>&1 | grep -v "^WARNING: Location" || true
    ;;
esac
.venv/bin/python -c "import tracemark" # fail loudly if the install did not work
