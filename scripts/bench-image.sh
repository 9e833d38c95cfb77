#!/usr/bin/env bash
# make bench-image: the lab recipe built by metal6 cold (empty cache) and warm (only the
# sysctl profile changed), and an equivalent image (same suite, mirror and packages, GPT +
# ext4) built by Debian's mkosi 14 cold and warm, in the same run. Prints seconds and ratios.
# Targets (issues #5, #16): metal6 cold <= mkosi cold, warm <= mkosi warm, warm <= 10 s.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /var/tmp/metal6-bench-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cargo build -q --locked -p metal6-cli
cargo build -q --locked --profile installer -p metal6-installer
M6="$PWD/target/debug/metal6"
INST="$PWD/target/installer/metal6-installer"
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

echo "bench-image: images/lab.yaml with metal6 (cold, then sysctl-only), and mkosi 14 (cold, then sysctl-only)"
t0=$(now)
"$M6" image build images/lab.yaml --out "$WORK/out" --cache "$WORK/cache" --installer "$INST" -o json >"$WORK/cold.json"
t1=$(now)
# The same recipe with one sysctl value raised: only the derived stage is rebuilt.
sed 's/^  vm.max_map_count: .*/  vm.max_map_count: 2097152/' images/lab.yaml >"$WORK/lab-sysctl.yaml"
"$M6" image build "$WORK/lab-sysctl.yaml" --out "$WORK/out2" --cache "$WORK/cache" --installer "$INST" -o json >"$WORK/warm.json"
t2=$(now)

# mkosi 14 (Debian's) on the same suite, mirror and packages, without docs (its default), a
# GPT + ext4 image (`-t gpt_ext4`), the sysctl profile as an extra tree: cold with an empty
# cache, then warm (`-i`, incremental: the cached tree after package install) with the same
# one value changed. How it runs here (shared notes, image-building.md): in a private mount
# namespace with a tmpfs on /run/systemd (nspawn refuses a /run on disk) and
# --nspawn-keep-unit (no systemd as PID 1 to ask for a scope). Its bootable mode (-b) fails
# on the loop-mounted ESP here, so mkosi builds no ESP, UKI or qcow2: metal6 does more work.
# Without -b mkosi installs the kernel with INITRD=No and builds no initramfs at all; its
# bootable mode would build one in every final (non-cached) build, so a postinst script does
# that here (update-initramfs, as metal6's base does once): the same image content.
pkgs=$(awk '/^packages:/{f=1; next} f && /^  - /{print $2; next} f{exit}' images/lab.yaml | paste -sd, -)
mirror=$(awk '/^  mirror:/{print $2; exit}' images/lab.yaml)
sysctl_conf() { # $1: the recipe
  awk '/^sysctl:/{f=1; next} f && /^  [a-z]/{sub(/^  /, ""); sub(/: /, " = "); print; next} f{exit}' "$1"
}
mkdir -p "$WORK/mk-cold/etc/sysctl.d" "$WORK/mk-warm/etc/sysctl.d" "$WORK/mkosi-cache" "$WORK/mkosi-ws"
printf '#!/bin/sh\nset -e\nupdate-initramfs -c -k all\nls /boot/initrd.img-*\n' >"$WORK/mkosi.postinst"
chmod +x "$WORK/mkosi.postinst"
sysctl_conf images/lab.yaml >"$WORK/mk-cold/etc/sysctl.d/90-metal6.conf"
sysctl_conf "$WORK/lab-sysctl.yaml" >"$WORK/mk-warm/etc/sysctl.d/90-metal6.conf"
cmp -s "$WORK/mk-cold/etc/sysctl.d/90-metal6.conf" "$WORK/mk-warm/etc/sysctl.d/90-metal6.conf" \
  && { echo "bench-image: the sysctl change did not apply to the mkosi overlay" >&2; exit 1; }
mkosi_build() { # $1: overlay, $2: log
  unshare -m --propagation private bash -c '
    if [ "$(stat -f -c %T /run)" != tmpfs ]; then mkdir -p /run/systemd; mount -t tmpfs tmpfs /run/systemd; fi
    exec mkosi --nspawn-keep-unit -f -d debian -r bookworm -m "$0" -t gpt_ext4 --root-size 3G \
      -o "$1" --cache "$2" -i --workspace-dir "$3" -p "$4" --extra-tree "$5" \
      --postinst-script "$6" build' \
    "$mirror" "$WORK/mkosi/image.raw" "$WORK/mkosi-cache" "$WORK/mkosi-ws" "$pkgs" "$1" \
    "$WORK/mkosi.postinst" >"$2" 2>&1
}
mkdir -p "$WORK/mkosi"
mk_status=ok mkw_status=ok
t3=$(now)
mkosi_build "$WORK/mk-cold" "$WORK/mkosi.log" || mk_status="failed (last lines below)"
t4=$(now)
if [[ $mk_status == ok ]]; then
  mkosi_build "$WORK/mk-warm" "$WORK/mkosi-warm.log" || mkw_status="failed (last lines below)"
  # A run that "succeeds" without its image measured nothing either.
  [[ $mkw_status != ok || -s $WORK/mkosi/image.raw ]] || mkw_status="failed (no image written)"
else
  mkw_status="not run (the cold build failed)"
fi
t5=$(now)

# A mkosi build without the initramfs did less work than ours: not comparable.
if [[ $mk_status == ok ]] && ! grep -q 'initrd.img-' "$WORK/mkosi.log"; then
  mk_status="not comparable (no initramfs built)"
fi
if [[ $mkw_status == ok ]] && ! grep -q 'initrd.img-' "$WORK/mkosi-warm.log"; then
  mkw_status="not comparable (no initramfs built)"
fi
cold=$(secs "$t0" "$t1"); warm=$(secs "$t1" "$t2"); mk=$(secs "$t3" "$t4"); mkw=$(secs "$t4" "$t5")
printf '\n%-44s %10s\n' "" "seconds"
printf '%-44s %10s\n' "metal6 cold (mmdebstrap + derived)" "$cold"
printf '%-44s %10s\n' "metal6 warm, sysctl profile changed" "$warm"
printf '%-44s %10s  %s\n' "mkosi 14 cold" "$mk" "$mk_status"
printf '%-44s %10s  %s\n' "mkosi 14 warm (-i), sysctl profile changed" "$mkw" "$mkw_status"
# A peer that failed measured nothing: no ratio against it (it once printed 332.75 against a
# mkosi that stopped after 0.4 s).
ratio() { # $1: label, $2: ours, $3: peer's, $4: peer's status
  if [[ $4 == ok ]]; then
    awk -v l="$1" -v c="$2" -v m="$3" 'BEGIN { if (m > 0) printf "%-44s %10.2f\n", l, c / m }'
  else
    printf '%-44s %10s\n' "$1" "none (the peer failed)"
  fi
}
ratio "ratio metal6 cold / mkosi cold" "$cold" "$mk" "$mk_status"
ratio "ratio metal6 warm / mkosi warm" "$warm" "$mkw" "$mkw_status"
echo "targets: both ratios <= 1.0 (lower is faster); metal6 warm <= 10 s"
echo "(both images hold the kernel and its initramfs; metal6 also builds the node UKI, the installer"
echo " UKI, the ESP and the qcow2, mkosi here the GPT + ext4 root only)"
if [[ $mk_status != ok ]]; then tail -15 "$WORK/mkosi.log"; fi
if [[ $mkw_status != ok && -s $WORK/mkosi-warm.log ]]; then tail -15 "$WORK/mkosi-warm.log"; fi
