#!/bin/sh
# An arm64 Debian root reached through a real OpenSSH server on loopback: the cross-architecture "board" of
# issue 12 item 3. Root only (debootstrap, chroot, binfmt_misc). Too slow for CI (minutes to tens of minutes
# under emulation); `python -m benchmarks.board.arm64` drives it and writes benchmarks/results/board_arm64.md.
#
#   make_arm64_root.sh ROOT [PORT]
#
# 1. debootstrap --foreign --arch=arm64 bookworm (packages from Debian), second stage under qemu-aarch64-static;
# 2. python3, python3-venv and openssh-server from Debian inside; a venv with aarch64 wheels of numpy,
#    onnxruntime and ai-edge-litert from PyPI, downloaded by the host's pip ($PIP) and pinned by $CONSTRAINTS;
# 3. the host's sshd on 127.0.0.1:PORT (default 2222) chrooting every session into the root (see below), with a
#    fresh host key and the caller's key ($ROOT/../board_key, made here): `ssh:root@127.0.0.1:PORT` reaches an
#    aarch64 Python.
# Without binfmt_misc the aarch64 binaries cannot be exec'd by the kernel; it is mounted and qemu registered by
# update-binfmts (qemu-user-static + binfmt-support); chroot then runs every aarch64 binary through qemu.
set -eu
ROOT=${1:?usage: make_arm64_root.sh ROOT [PORT]}
PORT=${2:-2222}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEY=$(dirname "$ROOT")/board_key

command -v debootstrap >/dev/null || { echo "need debootstrap: apt-get install debootstrap" >&2; exit 2; }
command -v qemu-aarch64-static >/dev/null || { echo "need qemu-user-static: apt-get install qemu-user-static binfmt-support" >&2; exit 2; }
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

if [ ! -x "$ROOT/usr/bin/python3" ]; then
  debootstrap --foreign --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,openssh-server,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
  cp "$(command -v qemu-aarch64-static)" "$ROOT/usr/bin/"
  chroot "$ROOT" /debootstrap/debootstrap --second-stage
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
for fs in proc sys dev; do mountpoint -q "$ROOT/$fs" || mount --bind "/$fs" "$ROOT/$fs"; done
# qemu-user 7.2 passes the x86 host's /proc/cpuinfo through, and the aarch64 builds of pytorch's cpuinfo library
# (inside onnxruntime, XNNPACK) crash parsing it: onnxruntime segfaulted on import. An aarch64-shaped cpuinfo
# (Cortex-A72 fields, one entry per host CPU) is bind-mounted over it; its model name keeps "qemu-user" and the
# host vendor, so the board runner still sees the emulation and says timings are the emulator's.
VENDOR=$(awk -F': ' '/^vendor_id/ {print $2; exit}' /proc/cpuinfo)
: > "$ROOT/../cpuinfo_aarch64"
for n in $(seq 0 $(($(nproc --all) - 1))); do
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n' "$n"
  printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n'
  printf 'model name\t: emulated by qemu-user on an x86 host (%s)\n\n' "${VENDOR:-x86}"
done >> "$ROOT/../cpuinfo_aarch64"
mountpoint -q "$ROOT/proc/cpuinfo" || mount --bind "$ROOT/../cpuinfo_aarch64" "$ROOT/proc/cpuinfo"

if [ ! -x "$ROOT/opt/board/bin/python" ]; then
  # The wheels are fetched by the host's pip (its index, proxy and certificates; --platform picks the aarch64
  # builds for the root's CPython 3.11) and installed offline inside: the root needs no network for PyPI.
  mkdir -p "$ROOT/opt/wheels"
  for pkg in numpy onnxruntime ai-edge-litert; do
    ${PIP:-pip} download -q --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
      --implementation cp --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
      --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
      ${CONSTRAINTS:+-c "$CONSTRAINTS"} -d "$ROOT/opt/wheels" "$pkg" \
      || echo "no aarch64 wheel of $pkg for cp311 (its rows will be 'not run')"
  done
  chroot "$ROOT" python3 -m venv /opt/board
  for pkg in numpy onnxruntime ai-edge-litert; do
    chroot "$ROOT" /opt/board/bin/pip install --disable-pip-version-check -q --no-index \
      --find-links /opt/wheels "$pkg" || echo "$pkg did not install in the root (its rows will be 'not run')"
  done
fi

# The root's own sshd (aarch64, under qemu) segfaults on the first connection (qemu-user 7.2, Debian 12), so the
# server is the HOST's OpenSSH with ChrootDirectory: sshd runs natively, every session runs inside the root, where
# each binary is aarch64 and goes through qemu. ChrootDirectory refuses a path under the world-writable /tmp, so
# the root is bind-mounted (recursively, with its proc/sys/dev) at a root-owned place first.
[ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N "" -f "$KEY"
CHROOT=${CHROOT:-/srv/edgevit-arm64}
mkdir -p "$CHROOT" /run/sshd
mountpoint -q "$CHROOT" || mount --rbind "$ROOT" "$CHROOT"
mountpoint -q "$CHROOT/proc/cpuinfo" || mount --bind "$ROOT/../cpuinfo_aarch64" "$CHROOT/proc/cpuinfo"
HERE=$(dirname "$ROOT")/sshd
mkdir -p "$HERE"
[ -f "$HERE/host" ] || ssh-keygen -q -t ed25519 -N "" -f "$HERE/host"
cp "$KEY.pub" "$HERE/authorized_keys"
cat > "$HERE/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $HERE/host
PidFile $HERE/sshd.pid
AuthorizedKeysFile $HERE/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
Subsystem sftp internal-sftp
ChrootDirectory $CHROOT
SetEnv PATH=/opt/board/bin:/usr/bin:/bin
CONF
[ -f "$HERE/sshd.pid" ] && kill "$(cat "$HERE/sshd.pid")" 2>/dev/null || true
/usr/sbin/sshd -f "$HERE/sshd_config"
echo "board up: ssh -i $KEY -p $PORT root@127.0.0.1 (an aarch64 session; python: /opt/board/bin/python)"
