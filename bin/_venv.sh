# Sourced by bin/dev and bin/test: create .venv and install the project when needed.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ABGATE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.abgate-installed"
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment in $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "==> installing abgate and its dependencies (first run only)" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$ROOT[test]" >&2
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
