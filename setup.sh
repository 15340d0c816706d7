#!/usr/bin/env bash
# Idempotent set-up of a fresh machine (Python 3.11+, PyPI reachable):
#   .venv      the project (torch, open_clip, transformers, diffusers, spacy, faiss, dagster, mlflow, ...)
#   .venv-dvc  DVC alone: dvc pins antlr4 4.9 through hydra, which breaks Dagster's string asset
#              selections (antlr 4.13); each gets its own environment (shared/reference/mlops.md).
# .venv/bin/dvc links to .venv-dvc's dvc, so one activated environment offers both commands.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check uv
fi
UV="$(command -v uv || echo "$PY -m uv")"
[ -x .venv/bin/python ] || $UV venv -q .venv --python "$PY"
# Pinned by the lock files; after a change of pyproject's dependencies, relock with
#   uv pip compile pyproject.toml --extra test --python-version 3.11 --no-header -o requirements.lock
VIRTUAL_ENV="$PWD/.venv" $UV pip install -q -e ".[test]" -c requirements.lock
[ -x .venv-dvc/bin/python ] || $UV venv -q .venv-dvc --python "$PY"
VIRTUAL_ENV="$PWD/.venv-dvc" $UV pip install -q -r requirements-dvc.lock
ln -sf "$PWD/.venv-dvc/bin/dvc" .venv/bin/dvc
# Byte-compile once: with PYTHONDONTWRITEBYTECODE set, every process (each DVC stage, each Dagster
# step) would otherwise recompile torch, spaCy and open_clip from source (measured: 29 s -> 10 s).
for env in .venv .venv-dvc; do
  stamp="$env/.compiled-$(cat "$env/pyvenv.cfg" pyproject.toml | cksum | cut -d' ' -f1)"
  if [ ! -e "$stamp" ]; then
    "$env/bin/python" -m compileall -q -j 0 "$env/lib" >/dev/null 2>&1 || true
    touch "$stamp"
  fi
done
# The UI test drives Debian's Chromium (Playwright uses it, nothing is downloaded); skipped where
# it cannot be installed (no root, no apt).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
    || echo "note: chromium not installed; the Dagster UI test will be skipped"
fi
mkdir -p .dagster_home
[ -s .dagster_home/dagster.yaml ] || printf 'telemetry:\n  enabled: false\n' > .dagster_home/dagster.yaml
echo "set-up done: $(.venv/bin/python -c 'import torch, dagster, mlflow; print("torch", torch.__version__, "| dagster", dagster.__version__, "| mlflow", mlflow.__version__)') | $(.venv/bin/dvc --version | sed 's/^/dvc /')"
