#!/usr/bin/env bash
# Prints the path of a Python virtualenv holding ElectrumX 2.0.0 (PyPI `e-x`, with LevelDB),
# creating it on first use. Tests use its `electrumx_rpc` and `electrumx_server` as the
# reference implementation; benchmarks run ElectrumX from it.
set -euo pipefail
venv="${ELECTRUMX_VENV:-$HOME/.cache/electrumx-rs/ex-venv}"
if [[ ! -x "$venv/bin/electrumx_rpc" ]]; then
    echo "electrumx-venv: installing e-x 2.0.0 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'e-x[leveldb]==2.0.0' >&2
fi
echo "$venv"
