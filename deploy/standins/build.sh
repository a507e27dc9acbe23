#!/usr/bin/env bash
# Builds, on a Docker engine that can pull nothing, every image the repository's
# Dockerfile and docker-compose.yml name but do not build themselves, under the
# names they use (see README.md here):
#
#   the Dockerfile's FROM debian:bookworm-slim   debootstrap (base/rootfs.sh) + docker import
#   the Dockerfile's FROM rust:V-slim-bookworm   the base + this machine's Rust toolchain V (rust/)
#   compose's postgres, axllent/mailpit,         stand-ins built on the base (postgres/,
#   jaegertracing/jaeger                          mailpit/, jaeger/)
#
# An image is built only when it is missing or is a stand-in made from other
# inputs (its label org.callguard.standin holds a hash of them), so a second
# run costs a few seconds. An image of such a name that is not a stand-in (a
# real one, pulled where a registry is reachable) is used as it is.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
# CARGO_BUILD_JOBS (default 2, baked into the Rust stand-in), the usual proxy
# variables (passed to the builds), DOCKER_BUILDKIT (default 0: the classic
# builder, which needs no buildx and looks for FROM images locally).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
label=org.callguard.standin
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
jobs=${CARGO_BUILD_JOBS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf '[standins] %s\n' "$*" >&2; }
die() {
  printf '[standins] error: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=deploy/standins/lib.sh
. "$here/lib.sh"

# The stand-in label of IMAGE: its inputs' hash; "real" for an image of that
# name that is not a stand-in; empty when there is no such image.
label_of() {
  local value
  value=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null) || return 0
  if [[ -z $value || $value == "<no value>" ]]; then echo real; else echo "$value"; fi
}

# Whether IMAGE must be (re)built for inputs hashing to FINGERPRINT.
needs_build() {
  local image=$1 fingerprint=$2 current
  current=$(label_of "$image")
  case $current in
    "$fingerprint")
      say "$image: up to date"
      return 1
      ;;
    real)
      say "$image: present and not a stand-in; used as it is"
      return 1
      ;;
    "") say "$image: building" ;;
    *) say "$image: inputs changed; rebuilding" ;;
  esac
}

# sha256 of the files under DIR (names and contents) and of the extra words.
hash_of() {
  local dir=$1
  shift
  {
    (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    printf '%s\n' "$@"
  } | sha256sum | cut -d' ' -f1
}

image_id() { docker image inspect -f '{{.Id}}' "$1"; }

build_failed() {
  tail -n 40 "$2" >&2
  die "docker build of $1 failed (above: the end of its log)"
}

# --- the images the Dockerfile and docker-compose.yml name -------------------

# FROM images of the Dockerfile that are not its own stages, with the ARG
# defaults declared before the first FROM substituted.
dockerfile_bases() {
  python3 - "$repo/Dockerfile" <<'PY'
import re, sys
args, stages, seen_from = {}, set(), False
for line in open(sys.argv[1]):
    words = line.split()
    if not words or words[0].startswith("#"):
        continue
    if words[0].upper() == "ARG" and not seen_from and "=" in words[1]:
        name, value = words[1].split("=", 1)
        args[name] = value
    elif words[0].upper() == "FROM":
        seen_from = True
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], ""), words[1])
        if image not in stages:
            print(image)
        if len(words) >= 4 and words[2].upper() == "AS":
            stages.add(words[3])
PY
}

# "SERVICE IMAGE" for each service of docker-compose.yml that names an image
# and does not build it, and that `docker compose up` starts (no profile).
compose_images() {
  (cd "$repo" && docker-compose config) | python3 -c '
import sys, yaml
for name, service in yaml.safe_load(sys.stdin)["services"].items():
    if "image" in service and "build" not in service and not service.get("profiles"):
        print(name, service["image"])
'
}

# --- debian:bookworm-slim ------------------------------------------------------

build_base() {
  local image=$1 fingerprint
  fingerprint=$(hash_of "$here/base" "$mirror")
  needs_build "$image" "$fingerprint" || return 0
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  [[ $(id -u) == 0 ]] || die "debootstrap needs root to build $image"
  local tmp=$work/base
  say "$image: debootstrap bookworm from $mirror"
  mkdir -p "$tmp"
  "$here/base/rootfs.sh" "$tmp/rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
    tail -n 30 "$tmp/debootstrap.log" >&2
    die "debootstrap failed (above: the end of its log)"
  }
  local old
  old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || old=
  tar -C "$tmp/rootfs" -c . |
    docker import --change 'CMD ["bash"]' --change "LABEL $label=$fingerprint" - "$image" >/dev/null
  if [[ -n $old ]]; then docker image rm "$old" >/dev/null 2>&1 || true; fi
  say "$image: imported ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# --- rust:V-slim-bookworm --------------------------------------------------------

# The sysroot of this machine's toolchain of version V (1.95 matches 1.95.x).
toolchain_sysroot() {
  local want=$1 rustc release
  for rustc in "rustc" "rustc +$want"; do
    release=$($rustc -vV 2>/dev/null | sed -n 's/^release: //p') || continue
    if [[ $release == "$want" || $release == "$want".* ]]; then
      $rustc --print sysroot
      return
    fi
  done
  die "no Rust $want on this machine (rustc is $(rustc --version 2>/dev/null || echo missing)); the Dockerfile's RUST_VERSION names it"
}

build_rust() {
  local image=$1 version=$2 base=$3 sysroot release host toolchain cargo_config fingerprint
  sysroot=$(toolchain_sysroot "$version")
  release=$("$sysroot/bin/rustc" -vV | sed -n 's/^release: //p')
  host=$("$sysroot/bin/rustc" -vV | sed -n 's/^host: //p')
  toolchain=$release-$host
  cargo_config=
  for file in "${CARGO_HOME:-$HOME/.cargo}"/config.toml "${CARGO_HOME:-$HOME/.cargo}"/config; do
    if [[ -f $file ]]; then
      cargo_config=$file
      break
    fi
  done
  local ca=/etc/ssl/certs/ca-certificates.crt
  [[ -f $ca ]] || die "no CA bundle at $ca for the Rust stand-in"
  fingerprint=$(hash_of "$here/rust" "$("$sysroot/bin/rustc" -vV)" "$("$sysroot/bin/cargo" -V)" \
    "$(sha256sum "$ca")" "${cargo_config:+$(sha256sum "$cargo_config")}" "jobs=$jobs" "$(image_id "$base")")
  needs_build "$image" "$fingerprint" || return 0
  local ctx=$work/rust
  mkdir -p "$ctx"
  cp "$here/rust/Dockerfile" "$ca" "$ctx/"
  mkdir -p "$ctx/toolchain" "$ctx/cargo"
  # The toolchain without its documentation; hard links where the file system allows.
  for part in bin lib libexec etc; do
    [[ -e $sysroot/$part ]] || continue
    cp -al "$sysroot/$part" "$ctx/toolchain/" 2>/dev/null || cp -a "$sysroot/$part" "$ctx/toolchain/"
  done
  if [[ -n $cargo_config ]]; then
    say "$image: with this machine's cargo config ($cargo_config)"
    cp "$cargo_config" "$ctx/cargo/config.toml"
  fi
  say "$image: toolchain $toolchain from $sysroot"
  build_replacing "$image" "$work/rust.log" --label "$label=$fingerprint" \
    --build-arg TOOLCHAIN="$toolchain" --build-arg RUST_VERSION="$release" \
    --build-arg CARGO_BUILD_JOBS="$jobs" "$ctx" || build_failed "$image" "$work/rust.log"
}

# --- the services' stand-ins -----------------------------------------------------

build_service() {
  local image=$1 dir=$2 base=$3 fingerprint
  fingerprint=$(hash_of "$here/$dir" "$(image_id "$base")")
  needs_build "$image" "$fingerprint" || return 0
  build_replacing "$image" "$work/$dir.log" --label "$label=$fingerprint" "$here/$dir" ||
    build_failed "$image" "$work/$dir.log"
}

base=
mapfile -t bases < <(dockerfile_bases)
for image in "${bases[@]}"; do
  case $image in
    debian:bookworm-slim)
      build_base "$image"
      base=$image
      ;;
  esac
done
[[ -n $base ]] || die "the Dockerfile no longer names debian:bookworm-slim, which the stand-ins are built on"
for image in "${bases[@]}"; do
  case $image in
    debian:bookworm-slim) ;;
    rust:*-slim-bookworm)
      version=${image#rust:}
      build_rust "$image" "${version%-slim-bookworm}" "$base"
      ;;
    *) die "the Dockerfile names $image, which has no stand-in here" ;;
  esac
done
while read -r service image; do
  case ${image%%:*} in
    postgres) build_service "$image" postgres "$base" ;;
    axllent/mailpit) build_service "$image" mailpit "$base" ;;
    jaegertracing/jaeger) build_service "$image" jaeger "$base" ;;
    *) die "docker-compose.yml's $service uses $image, which has no stand-in here" ;;
  esac
done < <(compose_images)
say "images ready"
