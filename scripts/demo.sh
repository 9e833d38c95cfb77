#!/usr/bin/env bash
# `make demo`: the main job on the embedded lab inventory. Builds the lab image and installer
# UKI (cached by content: minutes the first time, seconds after), then boots lab-node-1 in
# QEMU (OVMF, TCG) with a blank disk against a real `metal6 serve` in a private network
# namespace, and follows it live — UEFI HTTP boot over IPv6, installer, image to disk, reboot
# from disk — until the installed system reports `ready`. Ctrl-C stops it and cleans up.
# NODE=lab-node-2 does the same over PXEv6/TFTP; CONSOLE=1 shows the guest's serial console.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE=${NODE:-lab-node-1}
cargo build -q --locked -p metal6-cli
cargo build -q --locked --profile installer -p metal6-installer
m6=target/debug/metal6

echo "== The lab inventory"
"$m6" inventory show inventory/lab.yaml --node "$NODE"

echo
echo "== Building the lab image and the installer UKI (images/lab.yaml)"
"$m6" image build images/lab.yaml --out artifacts --installer target/installer/metal6-installer

echo
echo "== Booting $NODE: blank disk to installed node over IPv6"
args=(lab up --node "$NODE" --artifacts artifacts --workdir "lab/$NODE")
[[ ${CONSOLE:-0} == 1 ]] && args+=(--console)
"$m6" "${args[@]}"
echo
echo "Timeline, server log and serial console: lab/$NODE/ (state/events.jsonl, serve.log, serial.log)"
