#!/usr/bin/env bash
# Idempotent set-up of a checkout: system peers (apt), the virtual environment at .venv, torch first,
# then the project with every dependency pinned by constraints.txt. A second run with unchanged
# pyproject.toml / constraints.txt / this script only checks and returns (a stamp file in .venv).
#
# Environment:
#   PYTHON=/path/to/python3.11   interpreter used to create .venv (default: python3.11 on PATH,
#                                then /root/.pyenv/shims/python3.11)
#   BOOTSTRAP_SKIP_APT=1         do not touch system packages (only report what is missing)
#   BOOTSTRAP_FORCE=1            reinstall the Python packages even if the stamp is current
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.bootstrap-stamp"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
TORCH_VERSION="2.14.1"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- system packages: the real DICOM peers the tests and tools use -------------------------------
# tool path -> Debian package
declare -A APT_FOR=(
  [/usr/bin/storescu]=dcmtk
  [/usr/sbin/Orthanc]=orthanc
  [/usr/bin/dciodvfy]=dicom3tools
  [/usr/bin/chromium]=chromium
)

missing_packages() {
  local path
  for path in "${!APT_FOR[@]}"; do
    [[ -x "$path" ]] || printf '%s\n' "${APT_FOR[$path]}"
  done | sort -u
}

install_system_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if [[ "${BOOTSTRAP_SKIP_APT:-0}" != "1" && "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after apt-get: ${missing[*]}"
  else
    say "warning: missing system packages (tests that need them are skipped): ${missing[*]}"
    say "         install with: sudo apt-get install ${missing[*]}"
  fi
}

# --- Python ---------------------------------------------------------------------------------------
find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 /root/.pyenv/shims/python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

stamp_value() {
  cat pyproject.toml constraints.txt "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1
}

install_python_packages() {
  local py
  if [[ ! -x "$VENV/bin/python" ]]; then
    py="$(find_python)" || die "Python >= 3.11 not found; set PYTHON=/path/to/python3.11"
    say "creating $VENV with $py ($("$py" --version 2>&1))"
    "$py" -m venv "$VENV"
  fi
  local want
  want="$(stamp_value)"
  if [[ "${BOOTSTRAP_FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" &&
    -x "$VENV/bin/dicom-node" ]]; then
    say "Python environment up to date ($VENV)"
    return 0
  fi
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  "${pip[@]}" install -q --upgrade pip
  # torch first: its build decides which nvidia-*/triton wheels come with it.
  say "installing ${TORCH_PINS[*]}"
  "${pip[@]}" install -q "${TORCH_PINS[@]}"
  say "installing the project and its pinned dependencies (constraints.txt)"
  "${pip[@]}" install -q -c constraints.txt -e ".[dev,ray]"
  # The constraints pin torch; make sure nothing swapped in another build.
  local got
  got="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  [[ "${got%%+*}" == "$TORCH_VERSION" ]] || die "expected torch $TORCH_VERSION, found $got"
  "${pip[@]}" check >/dev/null || say "warning: pip check reports conflicts (run: $VENV/bin/pip check)"
  printf '%s\n' "$want" >"$STAMP"
  say "done: $VENV/bin/dicom-node"
}

install_system_packages
install_python_packages
