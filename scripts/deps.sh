#!/usr/bin/env bash
# Installs what building and testing need and is missing, on Debian/Ubuntu:
# redis-server, redis-tools (redis-cli, redis-benchmark), libclang-dev (bindgen
# runs on redismodule.h at build time), a C compiler, and cargo's clippy and
# rustfmt. Quiet and quick when everything is present.
#
# Debian's redis-server package may start a system Redis on port 6379; nothing
# of ours uses that port, so that is harmless.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
{ command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; } || missing+=(redis-tools)
have_libclang() {
    compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null 2>&1 ||
        compgen -G '/usr/lib/*/libclang*.so*' >/dev/null 2>&1 ||
        dpkg -s libclang-dev >/dev/null 2>&1
}
have_libclang || missing+=(libclang-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# promtool checks /metrics in the gateway tests; a venv runs the Autobahn suite.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# With one of redis-server and libclang missing, install both (a fresh machine).
if [ ${#missing[@]} -gt 0 ]; then
    missing+=(redis-server libclang-dev)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "deps: need root or sudo to install ${missing[*]}" >&2
            exit 1
        fi
    fi
    # Unique package names, in a stable order.
    mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "deps: installing ${pkgs[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# clippy and rustfmt come with rustup's default profile; add them when absent.
for component in clippy rustfmt; do
    sub=$component
    [ "$component" = rustfmt ] && sub=fmt
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            echo "deps: adding rustup component $component"
            rustup component add "$component" >/dev/null
        else
            echo "deps: cargo $sub is missing and there is no rustup to add it" >&2
            exit 1
        fi
    fi
done
