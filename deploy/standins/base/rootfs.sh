#!/usr/bin/env bash
# Makes a Debian bookworm root file system like the debian:bookworm-slim image:
# debootstrap's minbase, with the slim image's apt and dpkg settings (no
# documentation, man pages or translations; package lists and .deb files not
# kept) and its apt sources (bookworm, bookworm-updates, bookworm-security).
#
#   rootfs.sh DIR [MIRROR]     (as root; MIRROR defaults to http://deb.debian.org/debian)
#
# build.sh imports DIR with `docker import` as debian:bookworm-slim.
set -euo pipefail

dir=${1:?usage: rootfs.sh DIR [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}
security=${mirror%/debian}/debian-security

debootstrap --variant=minbase bookworm "$dir" "$mirror"

# The slim image's settings, under the names it gives them.
cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
CFG
cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"

rm -f "$dir/etc/apt/sources.list"
cat >"$dir/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# What the settings above would have kept out, and what debootstrap leaves.
find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$dir"/usr/share/{info,locale,man,groff,linda,lintian}/*
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/log/*.log "$dir"/var/log/apt/*
rm -f "$dir/etc/hostname" "$dir/etc/resolv.conf"
