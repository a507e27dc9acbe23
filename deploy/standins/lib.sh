# shellcheck shell=bash
# Sourced by build.sh and ../test-stack.sh: Docker builds on a registry-less engine.

# --build-arg for each proxy variable this shell has (Docker's predefined
# build arguments: they reach RUN steps but are not kept in the image).
proxy_args=()
for var in HTTP_PROXY http_proxy HTTPS_PROXY https_proxy NO_PROXY no_proxy ALL_PROXY all_proxy; do
  if [[ -n ${!var:-} ]]; then proxy_args+=(--build-arg "$var"); fi
done
unset var

# docker build -t TAG ARGS…, with the classic builder unless DOCKER_BUILDKIT
# says otherwise, printing its steps; its whole output goes to LOG. The image
# TAG named before, if the build replaced it, is removed with the layers only
# it used, so rebuilds do not pile up untagged images.
build_replacing() {
  local tag=$1 log=$2 old new
  shift 2
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null) || old=
  if ! DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -t "$tag" "${proxy_args[@]}" "$@" 2>&1 |
    tee "$log" | { grep --line-buffered -E '^Step [0-9]+/' || true; } >&2; then
    return 1
  fi
  new=$(docker image inspect -f '{{.Id}}' "$tag")
  if [[ -n $old && $old != "$new" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
}
