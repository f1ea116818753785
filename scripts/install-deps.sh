#!/usr/bin/env bash
# Installs every build and test dependency of rlm from the distribution's packages.
# Idempotent: safe to rerun. Needs root (or sudo) and the distribution's package mirror.
# chromium (a 124 MB download, 414 MB installed, about 25 s here) is only for the test of rlm view's page
# in a real browser (tests/e2e/test_view_browser.py), which is skipped without it.
# slurm-wlm and munge are only for rlm batch on a real single-node Slurm (tests/e2e/test_batch_slurm.py,
# bench/batch_bench.py --slurm), which starts its own daemons in a temporary directory and stops them;
# their packages' own services are not used (and not started where systemd does not run).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libcurl4-openssl-dev libjansson-dev python3-dev libpython3-dev
  libseccomp-dev libpcre2-dev libsqlite3-dev libssl-dev libmicrohttpd-dev libcmocka-dev zlib1g-dev libzstd-dev
  libedit-dev
  clang libclang-rt-dev
  help2man
  python3-pytest python3-build python3-setuptools python3-wheel python3-venv python3-pip
  chromium
  slurm-wlm munge
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
