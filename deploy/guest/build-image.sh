#!/usr/bin/env bash
# Builds vnet's own guest image from Debian packages only: the Debian kernel (vmlinuz) and an
# initramfs with busybox-static, the kernel modules the guest needs (virtio-mmio/pci, virtio-net,
# e1000, virtio-console), and the init in deploy/guest/rootfs/ that configures NICs, addresses,
# routes and the hostname from the kernel command line and serves the command channel.
#
#   deploy/guest/build-image.sh [--out DIR] [--arch ARCH] [--kernel-package PKG] [--modules M]
#                               [--force]
#
#   --out DIR             where the image goes (default /var/lib/vnet/images/default, or
#                         /var/lib/vnet/images/default-aarch64 for --arch aarch64)
#   --arch ARCH           guest architecture: x86_64 (default) or aarch64; a foreign
#                         architecture's kernel and busybox-static are unpacked from Debian's
#                         packages (dpkg --add-architecture arm64 is done when needed), not run
#   --kernel-package PKG  Debian kernel package or meta-package (default linux-image-amd64; the
#                         cloud flavour has no e1000 driver, which e1000 guests need)
#   --modules "M1 M2"     more kernel modules for the initramfs (build-debian.sh adds the disk's)
#   --force               rebuild even when the image is up to date
#
# Output: DIR/vmlinux (the uncompressed kernel, booted through PVH; DIR/vmlinuz when it cannot be
# extracted), DIR/initrd.img, DIR/image.json. Idempotent: the image is rebuilt only when
# the kernel version, busybox or the files under rootfs/ changed (recorded in image.json).
# Downloaded packages are cached in ${VNET_CACHE:-/var/cache/vnet}/debs. Needs root (or a
# writable DIR), apt-get, dpkg, depmod (kmod), cpio, gzip and busybox-static.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/lib/cli.sh
. "$here/../lib/cli.sh"
out=
kpkg=
arch=x86_64
extra_modules=
force=0
parse_args --out --arch --kernel-package:kpkg --modules:extra_modules --force:force=1 -- "$@"

case $arch in
  x86_64) debarch=amd64; qual=; suffix=; : "${kpkg:=linux-image-amd64}" ;;
  aarch64) debarch=arm64; qual=:arm64; suffix=-aarch64; : "${kpkg:=linux-image-arm64}" ;;
  *) die "unknown --arch $arch (x86_64 or aarch64)" ;;
esac
: "${out:=/var/lib/vnet/images/default$suffix}"
need_tools apt-get apt-cache dpkg depmod cpio gzip sha256sum
busybox=/bin/busybox
[[ -x $busybox ]] || die "busybox-static is missing (apt-get install busybox-static)"
ldd $busybox >/dev/null 2>&1 && die "$busybox is dynamically linked; install busybox-static"

cache=${VNET_CACHE:-/var/cache/vnet}/debs
mkdir -p "$cache" "$out" || die "cannot create $cache or $out"
if [[ $debarch != $(dpkg --print-architecture) ]] \
  && ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
  echo "build-image: adding the foreign architecture $debarch to dpkg (packages are only unpacked)"
  dpkg --add-architecture "$debarch" && apt-get update -qq || die "cannot add architecture $debarch"
fi

# Resolve a meta-package to the versioned kernel package it depends on.
resolve_kernel() {
  local pkg=$1 dep
  if [[ $pkg =~ ^linux-image-[0-9] ]]; then echo "$pkg"; return; fi
  dep=$(apt-cache depends "$pkg$qual" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $dep ]] && echo "${dep%:*}"
}
kernel_pkg=$(resolve_kernel "$kpkg")
if [[ -z $kernel_pkg ]]; then
  echo "build-image: $kpkg unknown to apt; running apt-get update" >&2
  apt-get update -qq || die "apt-get update failed"
  kernel_pkg=$(resolve_kernel "$kpkg")
fi
[[ -n $kernel_pkg ]] || die "cannot resolve $kpkg to a kernel package (apt-cache depends $kpkg)"
kver=$(apt-cache show "$kernel_pkg$qual" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[[ -n $kver ]] || die "apt knows no version of $kernel_pkg"
krel=${kernel_pkg#linux-image-}
krel=${krel%-unsigned}

# A foreign architecture's busybox comes from the same Debian version's busybox-static package.
bbver=$(apt-cache show "busybox-static$qual" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[[ -n $bbver ]] || die "apt knows no version of busybox-static$qual"
inputs_hash=$( { echo "$arch $kernel_pkg $kver $bbver $extra_modules"; sha256sum < "$busybox"; \
  (cd "$here/rootfs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); \
  sha256sum < "$here/build-image.sh"; } | sha256sum | cut -c1-16)
if ((!force)) && [[ -f $out/image.json && -f $out/initrd.img ]] \
  && grep -q "\"inputs\": \"$inputs_hash\"" "$out/image.json"; then
  echo "build-image: $out is up to date ($kernel_pkg $kver)"
  exit 0
fi

start=$(date +%s.%N)
work=$(mktemp -d "${TMPDIR:-/tmp}/vnet-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The .deb of package $1 at version $2 (for $debarch), from the cache or downloaded into it.
fetch_deb() {
  local pkg=$1 ver=$2 f
  f=$(ls "$cache/${pkg}_${ver//:/%3a}_${debarch}.deb" 2>/dev/null | head -1 || true)
  if [[ -z $f ]]; then
    echo "build-image: downloading $pkg$qual $ver" >&2
    mkdir -p "$work/dl" && chown _apt "$work/dl" 2>/dev/null || true
    (cd "$work/dl" && apt-get download -q "$pkg$qual=$ver" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2) \
      || die "apt-get download $pkg$qual=$ver failed"
    mv "$work"/dl/*.deb "$cache/" || die "download of $pkg produced no .deb"
    f=$(ls "$cache/${pkg}_${ver//:/%3a}_${debarch}.deb" | head -1)
  fi
  echo "$f"
}
deb=$(fetch_deb "$kernel_pkg" "$kver")
if [[ -n $qual ]]; then
  bbdeb=$(fetch_deb busybox-static "$bbver")
  dpkg -x "$bbdeb" "$work/bb" || die "dpkg -x $bbdeb failed"
  guest_busybox=$work/bb/bin/busybox
  [[ -f $guest_busybox ]] || die "$bbdeb contains no /bin/busybox"
else
  guest_busybox=$busybox
fi
echo "build-image: unpacking $(basename "$deb")"
dpkg -x "$deb" "$work/kernel" || die "dpkg -x $deb failed"
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* 2>/dev/null | head -1)
[[ -f $vmlinuz ]] || die "$deb contains no /boot/vmlinuz-*"
kmods=$work/kernel/lib/modules/$krel
[[ -d $kmods ]] || kmods=$(ls -d "$work"/kernel/lib/modules/* | head -1)
krel=$(basename "$kmods")
depmod -b "$work/kernel" "$krel" || die "depmod failed"

# The modules the guest loads, with their dependencies first.
# shellcheck disable=SC2206
wanted=(virtio_mmio virtio_pci virtio_net e1000 virtio_console $extra_modules)
order=()
add_module() {
  local name=$1 path deps d
  path=$(awk -v n="/$name.ko" -F: 'index($1, n) && substr($1, length($1) - length(n) + 1) == n {print $1; exit}' "$kmods/modules.dep")
  if [[ -z $path ]]; then
    grep -q "/$name.ko" "$kmods/modules.builtin" 2>/dev/null && return 0
    die "kernel $krel has no module $name"
  fi
  for d in "${order[@]}"; do [[ $d == "$path" ]] && return 0; done
  deps=$(awk -v p="$path" -F': ' '$1 == p {print $2; exit}' "$kmods/modules.dep")
  # modules.dep lists dependencies in reverse load order.
  local rev=() x
  for x in $deps; do rev=("$x" "${rev[@]}"); done
  for x in "${rev[@]}"; do add_module "$(basename "$x" .ko)"; done
  order+=("$path")
}
for m in "${wanted[@]}"; do add_module "$m"; done

root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,lib/modules}
cp "$guest_busybox" "$root/bin/busybox"
# The host's busybox lists the applets (a foreign one cannot run here; same Debian version).
applets=$("$busybox" --list) || die "$busybox --list failed"
for a in $applets; do [[ $a == busybox ]] || ln -s busybox "$root/bin/$a"; done
: > "$root/etc/vnet-modules.tmp"
for p in "${order[@]}"; do
  mkdir -p "$root/lib/modules/$(dirname "$p")"
  cp "$kmods/$p" "$root/lib/modules/$p"
  echo "$p" >> "$root/etc/vnet-modules.tmp"
done
cp -a "$here/rootfs/." "$root/"
mv "$root/etc/vnet-modules.tmp" "$root/etc/vnet/modules"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner 0:0) \
  | gzip -9n > "$work/initrd.img" || die "packing the initramfs failed"

# Under TCG, decompressing an xz bzImage takes about 4 s of a 5 s boot; the uncompressed ELF
# boots through its PVH entry (CONFIG_PVH) with no decompression. Extract it.
# (arm64's vmlinuz is the Image that QEMU's -M virt loads directly: nothing to extract.)
kernel_file=vmlinux
config=$(grep -E '^CONFIG_KERNEL_(XZ|ZSTD|GZIP)=y' "$work"/kernel/boot/config-* | head -1 || true)
[[ $arch == x86_64 ]] || config=
case $config in
  *XZ=y) magic='\xfd7zXZ\x00'; unpack=(xz -dc --single-stream) ;;
  *ZSTD=y) magic='\x28\xb5\x2f\xfd'; unpack=(zstd -dcq) ;;
  *GZIP=y) magic='\x1f\x8b\x08'; unpack=(gzip -dc) ;;
  *) magic= ;;
esac
offset=
if [[ -n $magic ]] && command -v "${unpack[0]}" >/dev/null; then
  offset=$(LC_ALL=C grep -obUaP -m1 "$magic" "$vmlinuz" | head -1 | cut -d: -f1 || true)
fi
# (Process substitution: the decompressor stops at the stream's end and tail's SIGPIPE is fine.)
if [[ -n $offset ]] && "${unpack[@]}" < <(tail -c +$((offset + 1)) "$vmlinuz") > "$work/vmlinux" 2>/dev/null \
  && [[ $(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] \
  && grep -q '^CONFIG_PVH=y' "$work"/kernel/boot/config-*; then
  echo "build-image: extracted the uncompressed kernel (PVH boot)"
else
  [[ $arch == x86_64 ]] && echo "build-image: cannot extract an uncompressed PVH kernel; using the bzImage (slower boot under TCG)" >&2
  rm -f "$work/vmlinux"
  kernel_file=vmlinuz
  cp "$vmlinuz" "$work/vmlinuz"
fi
# The digest the agent reports to the controller's image catalogue: kernel, then initramfs.
digest=$(cat "$work/$kernel_file" "$work/initrd.img" | sha256sum | cut -d' ' -f1)
cat > "$work/image.json" <<EOF
{
  "format": "kernel",
  "arch": "$arch",
  "digest": "sha256:$digest",
  "kernel": "$kernel_file",
  "initrd": "initrd.img",
  "kernel_package": "$kernel_pkg",
  "kernel_version": "$kver",
  "kernel_release": "$krel",
  "modules": [$(printf '"%s",' "${order[@]##*/}" | sed 's/,$//')],
  "nic_models": ["virtio", "e1000"],
  "busybox_version": "$bbver",
  "command_channel": "virtio-serial vnet.cmd v1",
  "inputs": "$inputs_hash"
}
EOF
# Replace atomically file by file; image.json last so a half-written image is never current.
for f in "$kernel_file" initrd.img image.json; do
  cp "$work/$f" "$out/.$f.new" && mv -f "$out/.$f.new" "$out/$f" || die "cannot write $out/$f"
done
for f in vmlinux vmlinuz; do [[ $f == "$kernel_file" ]] || rm -f "$out/$f"; done
end=$(date +%s.%N)
printf 'build-image: built %s in %.1f s: kernel %s, initrd.img %s (%s %s)\n' "$out" \
  "$(awk -v s="$start" -v e="$end" 'BEGIN {print e - s}')" \
  "$(du -h --apparent-size "$out/$kernel_file" | cut -f1)" "$(du -h --apparent-size "$out/initrd.img" | cut -f1)" "$kernel_pkg" "$kver"
