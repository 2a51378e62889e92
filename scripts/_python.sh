# Sourced by scripts: sets PY to a Python >= 3.12 (PATH names first, then pyenv's versions).
find_python() {
  local c
  for c in "${RR_PYTHON:-}" python3.14 python3.13 python3.12 python3 python; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  local roots=()
  command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null)/versions")
  roots+=("${PYENV_ROOT:-$HOME/.pyenv}/versions" /usr/local/bin /opt/python*/bin)
  for root in "${roots[@]}"; do
    for c in $(ls -d "$root"/3.1[2-9]*/bin/python3 "$root"/python3.1[2-9] 2>/dev/null | sort -V); do
      if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
        echo "$c"; return 0
      fi
    done
  done
  return 1
}
