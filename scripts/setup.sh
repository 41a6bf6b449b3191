#!/usr/bin/env bash
# Sets up everything jaxrl_isaac needs on a fresh Debian/Ubuntu machine, idempotently:
#   1. Debian packages for offscreen MuJoCo rendering (OSMesa on CPU; EGL/GL loaders for GPUs),
#   2. a virtual environment in .venv with the package installed editable (+ test extras).
# Re-running is cheap: each part is skipped when it is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(libosmesa6 libegl1 libgl1 libglvnd0)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
      echo "[setup] need root to install ${missing[*]} (apt-get); install them and re-run" >&2; exit 1; fi
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[setup] jaxrl_isaac needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.jaxrl_isaac-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing jaxrl_isaac and its dependencies into .venv (first time: a few minutes)"
  # (grep drops pip's notes about index locations this machine's pip.conf names but that do not exist)
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  quiet .venv/bin/python -m pip install -q --upgrade pip
  quiet .venv/bin/python -m pip install -q -e ".[test,parity]"
  # The PyTorch GR00T reference for the parity tests; --no-deps because its metadata pins an older torch.
  quiet .venv/bin/python -m pip install -q --no-deps lerobot==0.4.4
  echo "$want" > "$stamp"
fi
echo "[setup] ready: .venv/bin/python $(.venv/bin/python -c 'import jax, mujoco, torch; print(f"jax {jax.__version__}, mujoco {mujoco.__version__}, torch {torch.__version__}")')"
