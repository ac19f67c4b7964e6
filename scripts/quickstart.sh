#!/usr/bin/env bash
# The main job in one command: set up, index a folder of audio, then answer a text query.
#   bash scripts/quickstart.sh ~/Music "glass breaking"
# Needs the MS-CLAP weights: msclap downloads them on first use, or point CLAPDEX_CLAP_WEIGHTS
# (and CLAPDEX_TEXT_MODEL for air-gapped machines) at local copies. Extra arguments after the
# query are passed to `clapdex search`.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash scripts/quickstart.sh FOLDER \"text query\" [search options]" >&2
    exit 2
fi
folder=$1; query=$2; shift 2
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup.sh"
"$here/.venv/bin/clapdex" index "$folder"
"$here/.venv/bin/clapdex" search "$query" "$@"
