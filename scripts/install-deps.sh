#!/usr/bin/env bash
# Installs what metal6's build and tests need on a fresh Debian 12 machine. Idempotent: each
# package is installed only when missing, so a warm machine pays a few dpkg queries.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use as real peers. The list grows with the features that need them.
APT_PACKAGES=(
  iproute2          # network namespaces and veth pairs for every network test
  procps            # sysctl inside namespaces
  isc-dhcp-client   # dhclient -6: a real DHCPv6 client
  dhcpcd-base       # dhcpcd: a second real DHCPv6 client
  kea-admin         # perfdhcp: DHCPv6 load generator (direct and relayed)
  kea-dhcp6-server  # Kea: the peer the DHCPv6 benchmark compares against
  isc-dhcp-relay    # dhcrelay -6: a real relay agent
  radvd             # a real router's RAs on the lab's relayed segment (docs/boot-matrix.md)
  ipxe              # Debian's iPXE (snponly.efi): the boot matrix's iPXE cell chain-loads it
  dnsmasq-base      # metal6 doctor's test: a rogue router (RAs) and DHCPv6 server on the link
  nftables          # nft: doctor reads the ruleset; its test drops UDP 547 in a namespace
  chromium          # the dashboard's browser test (headless, driven through ChromeDriver)
  chromium-driver   # ChromeDriver for it (fantoccini speaks WebDriver to it)
  tshark            # dissects what we send; malformed packets fail a test
  qemu-system-x86   # boots real UEFI firmware (TCG) against metal6 serve
  ovmf              # the UEFI firmware (EDK2) whose IPv6 HTTP/PXE boot we must satisfy
  curl              # the HTTP client the HTTP tests speak with
  tftp-hpa          # tftp: a TFTP client (RFC 2347-2349 options)
  atftp             # a second TFTP client, with windowsize (RFC 7440)
  # The image builder (metal6 image build) and the end-to-end test:
  mmdebstrap        # Debian root filesystem, reproducible with SOURCE_DATE_EPOCH
  systemd-boot-efi  # the UKI stub (linuxx64.efi.stub) and systemd-boot for the ESP
  binutils          # objcopy: sections of the UKI
  dosfstools        # mkfs.vfat --invariant: the ESP
  mtools            # mcopy: files into the ESP without mounting
  fdisk             # sfdisk: the GPT of the disk image
  e2fsprogs         # mkfs.ext4 -d: the root partition without mounting
  busybox-static    # the installer initramfs's shell, insmod, mount
  qemu-utils        # qemu-img: the qcow2 output
  iputils-ping      # ping across emulated satellite links
  frr               # IS-IS routing in the satellite namespaces (metal6 emulate, netns backend)
  cpio              # GNU cpio reads back the initramfs we write (a test peer)
  # Redfish (metal6 bmc):
  openssl           # the tests' CA and BMC certificates
  python3           # tests/redfish/idrac_sim.py, and sushy-tools in the venv below
  python3-venv      # the venv for pip-installed peers
  # Cluster stage (metal6 cluster render): the rendered CNI configs are executed by these.
  containernetworking-plugins  # bridge, host-device, host-local, static, tuning, portmap
  # Several servers on one state (--state postgres://): the tests start their own server in a
  # private data directory, never the packaged service.
  postgresql
)

# Peers only the benchmarks need (`make bench`): installed when BENCH=1.
if [[ ${BENCH:-0} == 1 ]]; then
  APT_PACKAGES+=(
    nginx-light     # the HTTP peer of bench-http (sendfile on)
    tftpd-hpa       # the lock-step TFTP peer of bench-tftp
    libwrap0        # for atftpd, the windowed TFTP peer (its .deb is unpacked by the bench
                    # itself: installed, it would replace tftpd-hpa's in.tftpd)
    mkosi           # the image builder bench-image compares against (Debian's 14)
  )
fi

not_installed() {
  local out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]}"
}

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to apt-get install: $*" >&2
    exit 1
  fi
  echo "install-deps: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  ((updated)) || { apt-get update -qq; updated=1; }
  # Packaged daemons (nginx, tftpd-hpa) must not start as services: the benchmarks run their
  # own instances in namespaces. policy-rc.d exit 101 tells invoke-rc.d "not now".
  local guard=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || { ((guard)) && rm -f /usr/sbin/policy-rc.d; exit 1; }
  ((guard)) && rm -f /usr/sbin/policy-rc.d
  return 0
}

# An install can remove what another step relies on: on a fresh machine of this kind,
# installing qemu-system-x86 removed the image's newer qemu-utils (so qemu-img vanished after
# the check that had found it). So: install, then check again, and install what went missing;
# at most three rounds, then say what is still missing.
updated=0
for round in 1 2 3; do
  read -r -a missing <<<"$(not_installed "${APT_PACKAGES[@]}")"
  ((${#missing[@]})) || break
  if ((round == 3)); then
    echo "install-deps: still not installed after installing: ${missing[*]}" >&2
    exit 1
  fi
  apt_install "${missing[@]}"
done

# What the build and tests run, checked after every install (a package can be installed and
# its command still be gone, or a newer package may lack a file we use).
REQUIRED_COMMANDS=(ip sysctl dhclient dhcpcd perfdhcp kea-dhcp6 dhcrelay tshark qemu-system-x86_64 qemu-img
  curl tftp atftp mmdebstrap objcopy mkfs.vfat mcopy sfdisk mkfs.ext4 busybox ping cpio openssl python3 radvd
  dnsmasq nft chromium chromedriver)
REQUIRED_FILES=(/usr/share/OVMF/OVMF_CODE_4M.fd /usr/lib/systemd/boot/efi/linuxx64.efi.stub /usr/lib/cni/bridge
  /usr/lib/ipxe/snponly.efi)
absent=()
for c in "${REQUIRED_COMMANDS[@]}"; do
  command -v "$c" >/dev/null || [[ -x /usr/sbin/$c || -x /sbin/$c ]] || absent+=("command $c")
done
for f in "${REQUIRED_FILES[@]}"; do
  [[ -e $f ]] || absent+=("file $f")
done
# PostgreSQL's server binaries live under a versioned directory, not on PATH.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || absent+=("file /usr/lib/postgresql/*/bin/initdb")
if ((${#absent[@]})); then
  echo "install-deps: installed, but still missing: ${absent[*]}" >&2
  exit 1
fi

command -v cargo >/dev/null || { echo "install-deps: cargo not found; install the Rust toolchain named in rust-toolchain.toml" >&2; exit 1; }

# Peers from PyPI, pinned, in a venv of the checkout (never the system's Python).
VENV=${VENV:-.venv}
if [[ ! -x $VENV/bin/sushy-emulator ]] || ! cmp -s tests/requirements.txt "$VENV/.requirements"; then
  echo "install-deps: pip install -r tests/requirements.txt into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt "$VENV/.requirements"
fi
