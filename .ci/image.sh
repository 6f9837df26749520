#!/usr/bin/env bash
# The container image, built and run (called by .ci/run; runs alone too): installs podman,
# buildah, runc and skopeo with apt-get if missing; builds the release binary; makes the base
# layer from Debian packages; builds the image from the repository's Dockerfile with no pull;
# checks that it runs as non-root, that `asenet demo` inside it exits 0, that `asenet
# controller` inside it answers /healthz with the API server unreachable and that
# `podman stop` ends it with exit 0 or 143 (SIGTERM handled) inside the stop timeout; prints
# the image size. Every container and image it makes is removed on exit, success or not.
#
# Skipped (exit 0, with a message saying so) only where podman is missing and cannot be
# installed (no apt-get, or not root).
#
# This machine's quirks, handled through a containers.conf (CONTAINERS_CONF): crun refuses
# the hybrid cgroups, runc works; the default rlimits cannot be raised, so nofile and nproc
# are set explicitly; cgroupfs, not systemd. `--network host` reaches loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/asenet-target}"

step() { printf '\n==> image: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
die() { echo "FAIL image: $*" >&2; exit 1; }

step "tools (podman, buildah, runc, skopeo)"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc skopeo >/dev/null
  else
    echo "SKIPPED: podman/runc are not installed and cannot be installed here (needs apt-get as root); the image was NOT built or checked"
    exit 0
  fi
fi
podman --version
runc --version | head -1

work=$(mktemp -d)
tag="localhost/asenet-ci:$$"
ctr_demo="asenet-ci-demo-$$"
ctr_controller="asenet-ci-controller-$$"
cleanup() {
  podman rm -f "$ctr_demo" "$ctr_controller" >/dev/null 2>&1 || true
  podman rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$work/containers.conf"

step "release binary (cargo build --release --locked --bin asenet)"
cargo build --release --locked --bin asenet
ctx="$work/context"
mkdir -p "$ctx/rootfs"
strip -o "$ctx/asenet" "$CARGO_TARGET_DIR/release/asenet"
ls -l "$ctx/asenet"

step "base layer from Debian packages"
packages=(libc6 libgcc-s1 ca-certificates tzdata netbase)
mkdir -p "$work/debs"
if ! (cd "$work/debs" && apt-get download -qq "${packages[@]}" 2>/dev/null); then
  apt-get update -qq
  (cd "$work/debs" && apt-get download -qq "${packages[@]}")
fi
for deb in "$work"/debs/*.deb; do
  echo "  $(basename "$deb")"
  dpkg-deb -x "$deb" "$ctx/rootfs"
done
root="$ctx/rootfs"
# Documentation, translations and lintian overrides serve nobody in the image.
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian}
# ca-certificates builds its bundle in a maintainer script, which dpkg-deb -x does not run.
mkdir -p "$root/etc/ssl/certs"
find "$root/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z \
  | xargs -0 cat > "$root/etc/ssl/certs/ca-certificates.crt"
[ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "empty CA bundle"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
mkdir -p "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "no dynamic loader in the base layer"

step "podman build --pull=never -f Dockerfile"
podman build --pull=never -f "$repo/Dockerfile" -t "$tag" "$ctx"
user=$(podman image inspect --format '{{.Config.User}}' "$tag")
[ "$user" = "65532:65532" ] || die "image user is '$user', expected 65532:65532"
echo "  image user: $user"
env=$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$tag")
grep -qx 'MIMALLOC_PURGE_DELAY=0' <<<"$env" || die "image lacks ENV MIMALLOC_PURGE_DELAY=0: $env"
grep -qx 'MIMALLOC_ALLOW_THP=0' <<<"$env" || die "image lacks ENV MIMALLOC_ALLOW_THP=0: $env"
echo "  allocator: MIMALLOC_PURGE_DELAY=0, MIMALLOC_ALLOW_THP=0"

step "asenet demo inside the image"
podman run --name "$ctr_demo" --network host "$tag" demo > "$work/demo.log" 2>&1 \
  || { tail -40 "$work/demo.log"; die "asenet demo exited non-zero inside the image"; }
tail -3 "$work/demo.log"
grep -q 'Demo complete: every step behaved as expected.' "$work/demo.log" \
  || die "the demo did not complete"
podman rm "$ctr_demo" >/dev/null

step "asenet controller inside the image: /healthz with the API server unreachable, then podman stop"
# A kubeconfig naming a closed loopback port: the controller must start, serve /healthz and
# keep retrying the API server (not ready meanwhile), and stop cleanly on SIGTERM.
read -r api_port metrics_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
cat > "$work/kubeconfig" <<EOF
apiVersion: v1
kind: Config
current-context: ci
clusters: [{name: ci, cluster: {server: "https://127.0.0.1:$api_port"}}]
users: [{name: ci, user: {token: ci}}]
contexts: [{name: ci, context: {cluster: ci, user: ci, namespace: default}}]
EOF
chmod 0644 "$work/kubeconfig"
stop_timeout=20
podman run -d --name "$ctr_controller" --network host --stop-timeout "$stop_timeout" \
  -v "$work/kubeconfig:/etc/asenet/kubeconfig:ro" -e KUBECONFIG=/etc/asenet/kubeconfig \
  -e POD_NAMESPACE=default -e POD_NAME=asenet-ci \
  "$tag" controller --log-format text --metrics-addr "127.0.0.1:$metrics_port" \
  --credential static --token ci --endpoint http://127.0.0.1:9 >/dev/null
healthy=""
for _ in $(seq 1 60); do
  if [ "$(podman inspect --format '{{.State.Running}}' "$ctr_controller")" != "true" ]; then
    podman logs "$ctr_controller" 2>&1 | tail -20
    die "the controller exited: $(podman inspect --format '{{.State.ExitCode}}' "$ctr_controller")"
  fi
  if curl -fsS "http://127.0.0.1:$metrics_port/healthz" >/dev/null 2>&1; then
    healthy=yes
    break
  fi
  sleep 0.5
done
[ -n "$healthy" ] || { podman logs "$ctr_controller" 2>&1 | tail -20; die "no /healthz answer in 30 s"; }
echo "  /healthz: 200"
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$metrics_port/readyz" || true)
echo "  /readyz: $ready (the API server is unreachable)"
[ "$ready" != "200" ] || die "/readyz is 200 without an API server"
pid=$(podman inspect --format '{{.State.Pid}}' "$ctr_controller")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = "65532" ] || die "the controller runs as uid $uid, expected 65532"
echo "  controller process uid: $uid (non-root)"
started=$(date +%s)
podman stop --time "$stop_timeout" "$ctr_controller" >/dev/null
elapsed=$(( $(date +%s) - started ))
code=$(podman inspect --format '{{.State.ExitCode}}' "$ctr_controller")
podman logs "$ctr_controller" 2>&1 | tail -5
echo "  podman stop: exit $code after ${elapsed}s (stop timeout ${stop_timeout}s)"
case "$code" in
  0|143) ;;
  *) die "exit code $code after podman stop (137 means SIGTERM was not handled in ${stop_timeout}s)" ;;
esac
[ "$elapsed" -lt "$stop_timeout" ] || die "stopping took ${elapsed}s, the stop timeout is ${stop_timeout}s"

step "image size"
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "  $tag: $size bytes ($(( size / 1000000 )) MB; binary $(( $(stat -c %s "$ctx/asenet") / 1000000 )) MB)"
echo "image checks passed"
