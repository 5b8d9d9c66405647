#!/usr/bin/env bash
# Builds a small Debian disk image for vnet guests from the Debian archive, with the machine's own
# apt sources: mmdebstrap (minbase) with systemd, iproute2, busybox, iperf3 and the Debian kernel,
# plus the vnet units (deploy/guest/debian/): vnet-seed configures hostname, NICs, addresses and
# routes from the NoCloud seed the agent attaches, vnet-cmd serves the command channel. The root
# file system is made with mkfs.ext4 -d (no loop mount) and converted to qcow2: guests boot an
# overlay on it. The kernel boots directly (no bootloader) with the project's initramfs, which
# loads virtio-blk and switches to the disk (vnet.root=LABEL=vnet-root).
#
#   deploy/guest/build-debian.sh [--out DIR] [--force]
#
#   --out DIR   where the image goes (default /var/lib/vnet/images/debian)
#   --force     rebuild even when the image is up to date
#
# Output: DIR/disk.qcow2, DIR/vmlinux, DIR/initrd.img, DIR/image.json (format "disk"). Rebuilt
# only when its inputs changed: this script, the vnet files, the suite and the kernel version
# (recorded in image.json). Needs root, mmdebstrap, e2fsprogs, qemu-utils (deploy/setup.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/lib/cli.sh
. "$here/../lib/cli.sh"
out=/var/lib/vnet/images/debian
force=0
parse_args --out --force:force=1 -- "$@"
need_tools mmdebstrap mkfs.ext4 qemu-img apt-cache sha256sum
need_root "mmdebstrap into a directory"

# The machine's own Debian suite and sources.
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n $suite ]] || die "/etc/os-release names no VERSION_CODENAME"
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [[ -s $f ]] && sources+=("$f")
done
((${#sources[@]})) || die "no apt sources in /etc/apt"
kpkg=linux-image-amd64
kver=$(apt-cache show "$kpkg" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[[ -n $kver ]] || die "apt knows no version of $kpkg (apt-get update?)"
packages=systemd,systemd-sysv,udev,iproute2,busybox,iperf3,xxd,procps,$kpkg

inputs_hash=$( { echo "$suite $kpkg $kver $packages"; cat "${sources[@]}"; \
  (cd "$here" && find debian rootfs build-debian.sh build-image.sh -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16)
if ((!force)) && [[ -f $out/image.json && -f $out/disk.qcow2 ]] \
  && grep -q "\"inputs\": \"$inputs_hash\"" "$out/image.json"; then
  echo "build-debian: $out is up to date ($suite, $kpkg $kver)"
  exit 0
fi

start=$(date +%s.%N)
mkdir -p "$out" || die "cannot create $out"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/vnet-debian.XXXXXX")
# --one-file-system: never into what a killed mmdebstrap may have left mounted in the tree.
trap 'rm -rf --one-file-system "$work"' EXIT

# The kernel and the initramfs that mounts the disk, from the same kernel package as the image's.
"$here/build-image.sh" --out "$work/boot" --kernel-package "$kpkg" --modules "virtio_blk crc32c_generic ext4 isofs" \
  --force || die "building the initramfs failed"

# Left out after installation (dpkg's path-exclude breaks on excluded directories with files
# inside): documentation, locales, and the kernel's drivers for graphics, wireless, media, sound
# and other hardware QEMU does not emulate here.
prune=(usr/share/man usr/share/info usr/share/locale usr/share/lintian
  drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging sound
  drivers/bluetooth drivers/iio drivers/usb drivers/scsi drivers/hid drivers/input drivers/isdn)

# Few units, a short boot under TCG: no timers, no VT getty, no initramfs in /boot (the agent
# boots the image's kernel with vnet's initramfs).
customize=$(cat <<EOF
set -e
root="\$1"
install -d "\$root/etc/vnet" "\$root/etc/systemd/system/serial-getty@ttyS0.service.d"
install -m 0755 "$here/rootfs/etc/vnet/net" "$here/rootfs/etc/vnet/cmd-server" "$here/debian/vnet-seed" "\$root/etc/vnet/"
install -m 0644 "$here/debian/vnet-seed.service" "$here/debian/vnet-cmd.service" "\$root/etc/systemd/system/"
install -m 0644 "$here/debian/autologin.conf" "\$root/etc/systemd/system/serial-getty@ttyS0.service.d/"
chroot "\$root" systemctl enable vnet-seed.service vnet-cmd.service
chroot "\$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer fstrim.timer getty@tty1.service getty-static.service systemd-timesyncd.service \
  systemd-networkd-wait-online.service e2scrub_reap.service 2>/dev/null || true
echo vnet-guest > "\$root/etc/hostname"
echo "LABEL=vnet-root / ext4 rw,noatime 0 1" > "\$root/etc/fstab"
: > "\$root/etc/machine-id"
passwd --root "\$root" -d root
rm -f "\$root"/boot/initrd.img* "\$root"/var/cache/apt/*.bin
rm -rf "\$root"/var/lib/apt/lists/*
for p in ${prune[*]}; do
  case \$p in
    usr/*) rm -rf "\$root/\$p"/* ;;
    *) rm -rf "\$root"/lib/modules/*/kernel/"\$p" ;;
  esac
done
find "\$root/usr/share/doc" -type f ! -name copyright -delete
for k in "\$root"/lib/modules/*; do depmod -b "\$root" "\${k##*/}"; done
EOF
)
echo "build-debian: mmdebstrap $suite into $work/root (sources: ${sources[*]})"
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --customize-hook="$customize" "$suite" "$work/root" "${sources[@]}" \
  || die "mmdebstrap failed"

# An ext4 file system of the tree with room to spare, then qcow2.
used_mb=$(du -sm "$work/root" | cut -f1)
size_mb=$(( (used_mb * 13 / 10 + 256 + 63) / 64 * 64 ))
mkfs.ext4 -q -L vnet-root -O ^has_journal -E root_owner=0:0 -d "$work/root" "$work/disk.raw" "${size_mb}M" \
  || die "mkfs.ext4 -d failed"
rm -rf "$work/root"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2" || die "qemu-img convert failed"
rm -f "$work/disk.raw"

kernel_file=vmlinux
[[ -f $work/boot/$kernel_file ]] || kernel_file=vmlinuz
digest=$(cat "$work/disk.qcow2" "$work/boot/$kernel_file" "$work/boot/initrd.img" | sha256sum | cut -d' ' -f1)
cp "$work/boot/$kernel_file" "$work/boot/initrd.img" "$work/"
cat > "$work/image.json" <<EOF
{
  "format": "disk",
  "arch": "x86_64",
  "digest": "sha256:$digest",
  "disk": "disk.qcow2",
  "disk_format": "qcow2",
  "kernel": "$kernel_file",
  "initrd": "initrd.img",
  "root": "LABEL=vnet-root",
  "os": "debian $suite",
  "kernel_package": "$kpkg",
  "kernel_version": "$kver",
  "nic_models": ["virtio", "e1000"],
  "command_channel": "virtio-serial vnet.cmd v1",
  "inputs": "$inputs_hash"
}
EOF
rm -f "$out/image.json"
for f in "$kernel_file" initrd.img disk.qcow2 image.json; do
  cp "$work/$f" "$out/.$f.new" && mv -f "$out/.$f.new" "$out/$f" || die "cannot write $out/$f"
done
end=$(date +%s.%N)
printf 'build-debian: built %s in %.0f s: disk.qcow2 %s (file system %s MiB), %s\n' "$out" \
  "$(awk -v s="$start" -v e="$end" 'BEGIN {print e - s}')" \
  "$(du -h "$out/disk.qcow2" | cut -f1)" "$size_mb" "$suite"
