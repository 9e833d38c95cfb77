#!/usr/bin/env bash
# `make demo`: the main job on the embedded lab inventory, the way an operator runs a fleet.
# Builds the lab image and installer UKI (cached by content: minutes the first time, seconds
# after), then `metal6 lab apply`: a private network namespace with a real `metal6 serve`, a
# Redfish BMC per node (tests/lab/qemu_bmc.py, a simulator that drives each QEMU VM over QMP)
# and `metal6 apply` inside it. apply powers every node on through its BMC with a one-time
# UEFI HTTP (lab-node-1) or PXE (lab-node-2) boot; OVMF netboots over IPv6, the installer
# writes the image, the node reboots from disk and reports `ready` — shown live. Ctrl-C stops
# it (nodes stay resumable) and cleans up.
# NODES=lab-node-1 drives one node only; `metal6 lab up --node NODE` is the BMC-less path.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --locked -p metal6-cli
cargo build -q --locked --profile installer -p metal6-installer
m6=target/debug/metal6

echo "== The lab inventory"
"$m6" inventory show inventory/lab.yaml

echo
echo "== Building the lab image and the installer UKI (images/lab.yaml)"
"$m6" image build images/lab.yaml --out artifacts --installer target/installer/metal6-installer

echo
echo "== metal6 apply on the lab: power-off to ready through the BMCs, over IPv6"
args=(lab apply --artifacts artifacts --workdir lab/env --)
[[ -n ${NODES:-} ]] && args+=(--nodes "$NODES")
"$m6" "${args[@]}"
