#!/usr/bin/env bash
# Run the linter and the tests: bash tools/test.sh [pytest args...]
# On first run (or when a requirements file changed) this creates .venv with the pinned test dependencies.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=.venv
python=${PYTHON:-python3}

# A hash of the pins, stored in the venv once everything installed: an interrupted or outdated
# install is redone instead of being trusted.
want=$(cat requirements-test.txt requirements-test-nodeps.txt tools/test.sh | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$venv/.installed" 2>/dev/null || true)" != "$want" ]]; then
    echo "tools/test.sh: creating $venv with the pinned test dependencies (a few minutes)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # torch on its own first, so that the resolver keeps this exact build (the CPU wheel where pip
    # finds one) instead of choosing one for diffusers/peft.
    "$venv/bin/pip" install --quiet torch==2.13.0
    "$venv/bin/pip" install --quiet -r requirements-test.txt
    # Packages whose declared dependencies must never be installed (see the file's comments).
    "$venv/bin/pip" install --quiet --no-deps -r requirements-test-nodeps.txt
    echo "$want" > "$venv/.installed"
fi

# shellcheck disable=SC1091
source "$venv/bin/activate"
ruff check .
python -m pytest -q "$@"
