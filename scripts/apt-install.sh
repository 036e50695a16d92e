#!/usr/bin/env bash
# Installs Debian packages when their command is missing (idempotent): `apt-get install`,
# and `apt-get update` first only when that fails (a fresh machine's empty lists). Uses sudo -n
# when not root.
#
#   scripts/apt-install.sh COMMAND [PACKAGE]     # PACKAGE defaults to COMMAND
set -euo pipefail
cmd=$1
pkg=${2:-$1}
command -v "$cmd" >/dev/null && exit 0
printf 'apt-install: installing Debian'"'"'s %s\n' "$pkg" >&2
SUDO=; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
$SUDO apt-get install -y -q --no-install-recommends "$pkg" >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "$pkg" >/dev/null; }
command -v "$cmd" >/dev/null || { printf 'apt-install: %s still missing after installing %s\n' "$cmd" "$pkg" >&2; exit 1; }
