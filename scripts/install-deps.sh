#!/usr/bin/env bash
# Installs what building Cairn needs and a fresh Debian machine lacks:
# libclang (bindgen, for RocksDB's bindings), a C++ compiler, libfaketime
# (the chaos tests' clock skew) and iproute2 (the network-namespace test of
# nodes on separate hosts); with --test, also Chromium with ChromeDriver
# (the dashboard's browser test).
set -euo pipefail

need=()
if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  need+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# The chaos tests skew a node's clock with libfaketime.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need+=(faketime)
# Nodes on separate hosts are tested in network namespaces (ip netns).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The dashboard is tested in a real browser: headless Chromium through
# ChromeDriver.
if [ "${1:-}" = "--test" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
