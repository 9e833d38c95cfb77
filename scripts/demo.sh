#!/usr/bin/env bash
# `make demo`: a tour of what metal6 does today, on the embedded lab inventory.
#
# For now this is the inventory tour: validation, the resolved plan, the precise errors. The
# full demo (a QEMU lab node netbooted over IPv6 and installed) replaces it when the netboot
# server, image builder and installer land (issues #3-#6); this script says so when it runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --locked -p metal6-cli
m6=target/debug/metal6
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}" || true; }

echo "metal6 demo — inventory tour."
echo "The netboot demo (QEMU + OVMF over IPv6, blank disk to installed node) is not built yet;"
echo "this tour shows the inventory stage it will start from."

step "Validate the lab inventory" "$m6" inventory check inventory/lab.yaml
step "The resolved plan of every lab node" "$m6" inventory show inventory/lab.yaml
step "One node in detail" "$m6" inventory show inventory/lab.yaml --node lab-node-1
step "A realistic Dell fleet (3 control-plane + 20 R750 workers)" "$m6" inventory show inventory/example-dell.yaml
step "An inventory with mistakes: every problem, with file:line:column and a hint" \
  "$m6" inventory check tests/inventory/invalid/41-many-errors-at-once.yaml
step "The same for tools" "$m6" inventory check -o json tests/inventory/invalid/13-duplicate-address.yaml
