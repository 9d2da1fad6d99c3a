#!/usr/bin/env bash
# Build the CPU image with podman and run it for real; lint the GPU Dockerfile and compose file.
#
#   docker/test-build.sh            (as root, with podman and debootstrap installed; CI runs it)
#
# Steps, each printed with the time it started:
#  1. static checks: hadolint on both Dockerfiles, dclint (compose-spec schema) on compose.yaml,
#     and that both Dockerfiles install the project with the same steps (`make deps`, `make venv`);
#  2. a Debian bookworm base image from `debootstrap --variant=minbase` (no registry needed),
#     imported with `podman import`; kept between runs in $CTRLAUG_DOCKER_WORK;
#  3. `podman build --isolation=chroot --network host` of docker/Dockerfile.cpu on that base;
#     pip gets this machine's CA bundle (PIP_CERT) and, where $BUILD_WHEELS exists, a local
#     wheel folder (PIP_FIND_LINKS) for this build only; nothing of it lands in the image;
#  4. the image's own entrypoint, user, environment and working directory (read from its
#     config) run in a chroot of a container made from it (`podman run` is not allowed in this
#     sandbox): `ctrlaug --help`, then a tiny synth -> preprocess -> verify -> pretrain (Ray,
#     1 CPU worker) that logs to the image's own `mlflow server`, started with compose.yaml's
#     arguments and reached by its service name's Host header.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=${CTRLAUG_DOCKER_WORK:-$root/docker/.work}
base_image=${BASE_IMAGE:-localhost/ctrlaug-base:bookworm}
image=${IMAGE:-localhost/ctrlaug:cpu}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
build_wheels=${BUILD_WHEELS:-/opt/wheels}
venv=${VENV:-$root/.venv}
mkdir -p "$work"

step() { echo "== $(date -u +%T) $*"; }
fail() { echo "test-build: $*" >&2; exit 1; }

for tool in podman debootstrap chroot curl npm git; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install podman debootstrap curl)"
done

# --- 1. static checks ----------------------------------------------------------------------
step "hadolint docker/Dockerfile docker/Dockerfile.cpu"
"$venv/bin/hadolint" docker/Dockerfile docker/Dockerfile.cpu

step "dclint docker/compose.yaml (compose-spec schema)"
( cd "$work" && [ -x node_modules/.bin/dclint ] \
    || npm install --silent --no-audit --no-fund dclint@3.1.0 )
"$work/node_modules/.bin/dclint" --config docker/dclint.yaml --max-warnings 0 docker/compose.yaml

step "one install recipe: the same make steps in both Dockerfiles"
gpu_recipe=$(grep -E '^[^#]*\bmake (deps|venv)\b' docker/Dockerfile || true)
cpu_recipe=$(grep -E '^[^#]*\bmake (deps|venv)\b' docker/Dockerfile.cpu || true)
[ -n "$cpu_recipe" ] && [ "$gpu_recipe" = "$cpu_recipe" ] \
  || fail "the Dockerfiles install the project differently: '$gpu_recipe' vs '$cpu_recipe'"
echo "$cpu_recipe"

# --- 2. base image -------------------------------------------------------------------------
if podman image exists "$base_image"; then
  step "base image $base_image exists"
else
  step "debootstrap --variant=minbase bookworm -> $base_image"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" \
    || { tail -20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  tar -C "$work/rootfs" -c . | podman import - "$base_image" >/dev/null
  rm -rf "$work/rootfs"
fi

# --- 3. build ------------------------------------------------------------------------------
commit=$(git rev-parse HEAD)
build_args=(--build-arg "BASE_IMAGE=$base_image" --build-arg "GIT_COMMIT=$commit")
mounts=()
if [ -f "$ca_bundle" ]; then
  build_args+=(--secret "id=pip_cert,src=$ca_bundle")  # the Dockerfiles' optional CA secret
fi
if [ -d "$build_wheels" ]; then
  # Local wheels (this machine's CPU torch) instead of PyTorch's CPU index.
  mounts+=(-v "$build_wheels:/run/build/wheels:ro")
  build_args+=(--build-arg PIP_FIND_LINKS=/run/build/wheels --build-arg PIP_EXTRA_INDEX_URL=)
fi
step "podman build -f docker/Dockerfile.cpu -> $image"
podman build --isolation=chroot --network host --layers -f docker/Dockerfile.cpu \
  "${mounts[@]}" "${build_args[@]}" -t "$image" .
podman image ls "$image"

# --- 4. run the image ----------------------------------------------------------------------
container=""
rootfs=""
mounted=()
cleanup() {  # stop whatever runs inside the image's root, unmount, remove the container
  local rc=$?
  set +e
  if [ -n "$rootfs" ]; then
    for signal in TERM KILL; do
      for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/root" 2>/dev/null)" = "$rootfs" ] && kill -"$signal" "${proc#/proc/}"
      done 2>/dev/null
      sleep 2
    done
  fi
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[i]}"; done
  if [ -n "$container" ]; then
    podman umount "$container" >/dev/null
    podman rm -f "$container" >/dev/null
  fi
  exit "$rc"
}
trap cleanup EXIT
container=$(podman create "$image")
rootfs=$(podman mount "$container")
bind() {  # bind SOURCE TARGET-inside-the-image
  mkdir -p "$rootfs$2" && mount --bind "$1" "$rootfs$2" && mounted+=("$rootfs$2")
  mount --make-rprivate "$rootfs$2"  # nothing mounted below it reaches the host
}
mount -t proc proc "$rootfs/proc" && mounted+=("$rootfs/proc")
bind /dev /dev
mount -t tmpfs -o size=2g tmpfs "$rootfs/dev/shm" && mounted+=("$rootfs/dev/shm")
data="$work/data"
rm -rf "$data" && mkdir -p "$data"/{raw,shards,runs,mlflow}
bind "$data" /data

# What `docker run IMAGE ARGS` would do: the image's user, environment, working directory and
# entrypoint, read from its config.
config() { podman image inspect --format "{{json .Config.$1}}" "$image"; }
user=$(podman image inspect --format '{{.Config.User}}' "$image")
workdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$image")
mapfile -t image_env < <(config Env | python3 -c 'import json,sys; print(*json.load(sys.stdin), sep="\n")')
mapfile -t entrypoint < <(config Entrypoint | python3 -c 'import json,sys; print(*json.load(sys.stdin), sep="\n")')
[[ "$user" =~ ^[0-9]+(:[0-9]+)?$ && "${user%%:*}" != 0 ]] || fail "image user '$user' is not a numeric non-root user"
chown -R "${user%%:*}:${user#*:}" "$data"
in_image() {  # in_image PROGRAM ARGS...: run as the image would (as $as_user), in its root
  chroot --userspec="${as_user:-$user}" "$rootfs" /usr/bin/env -i "${image_env[@]}" \
    /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "$@"
}
run_image() { in_image "${entrypoint[@]}" "$@"; }  # docker run IMAGE "$@"

step "docker run $image --help"
run_image --help > "$work/help.txt" && head -5 "$work/help.txt"
run_image --version
# Another uid than the image's (docker run --user, CTRLAUG_UID in compose) still has a
# writable HOME, where Ray and MLflow keep their files.
as_user=4242:4242 in_image python3 -c \
  'import pathlib; (pathlib.Path.home() / ".probe").write_text("ok"); print("HOME writable as uid 4242")'

step "in the image: synth -> preprocess -> verify"
run_image synth --out /data/raw/synth --classes 2 --videos-per-class 3 --frames 40 \
  --width 96 --height 72 --codec vp9
run_image preprocess --dataset folder --videos /data/raw/synth --out /data/shards/synth \
  --format video --short-side 64 --workers 2
run_image verify /data/shards/synth

step "in the image: mlflow server with compose.yaml's arguments"
port=${MLFLOW_TEST_PORT:-15871}
mapfile -t mlflow_args < <(python3 - "$port" <<'EOF'
import re, sys
# The mlflow service's command list of docker/compose.yaml, with ${VAR:-default} resolved
# to its default and the port moved off 5000.
text = open("docker/compose.yaml").read()
block = re.search(r"\n  mlflow:\n(.*?)\n  [a-z-]+:\n", text, re.S).group(1)
command = re.search(r"\n    command:\n((?:      - .*\n)+)", block + "\n").group(1)
for line in command.splitlines():
    arg = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", line.strip()[2:])
    print(arg.replace("5000", sys.argv[1]))
EOF
)
printf '  %s\n' "${mlflow_args[@]}"
in_image mlflow server "${mlflow_args[@]}" > "$work/mlflow.log" 2>&1 &
mlflow_pid=$!  # stopped with everything else in the image's root by cleanup
for attempt in $(seq 61); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$mlflow_pid" 2>/dev/null || { cat "$work/mlflow.log"; fail "mlflow server exited"; }
  [ "$attempt" -le 60 ] || { tail -20 "$work/mlflow.log"; fail "mlflow server not up in 120 s"; }
  sleep 2
done
# /health skips MLflow's Host check; the API does not: the compose service name must pass,
# an unknown name must not.
status_as() {
  curl -s -o /dev/null -w '%{http_code}' -H "Host: $1" \
    "http://127.0.0.1:$port/api/2.0/mlflow/experiments/search?max_results=1"
}
[ "$(status_as "mlflow:$port")" = 200 ] \
  || fail "mlflow refuses its compose service name as Host header (--allowed-hosts)"
[ "$(status_as "rebinding.example.com")" = 403 ] \
  || fail "mlflow accepts an unknown Host header: --allowed-hosts is not in effect"
echo "mlflow API answers Host mlflow:$port, refuses rebinding.example.com (403)"

step "in the image: pretrain (Ray Train, 1 CPU worker, 1 epoch) -> MLflow"
MLFLOW_TRACKING_URI="http://mlflow:$port"
echo "127.0.0.1 mlflow" >> "$rootfs/etc/hosts"
image_env+=("MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI" "EXPECTED_COMMIT=$commit")
run_image pretrain --config /opt/ctrlaug/src/configs/tiny-cpu.toml \
  --data.shards=/data/shards/synth --data.batch_size=4 --augment.levels_per_batch=2 \
  --run.workers=1 --run.storage_path=/data/runs --run.name=docker-test --optim.epochs=1
in_image python3 - <<'EOF'
import mlflow
runs = mlflow.search_runs(experiment_names=["ctrlaug-pretrain"], output_format="list")
run = next(r for r in runs if r.data.tags.get("ctrlaug.job") == "docker-test")
assert run.info.status == "FINISHED", run.info.status
assert "loss_rc" in run.data.metrics, sorted(run.data.metrics)
artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
assert {"config.json", "checkpoints"} <= artifacts, artifacts
assert run.outputs.model_outputs, "no LoggedModel"  # the encoder
import os
commit = run.data.tags["mlflow.source.git.commit"]
assert commit == os.environ["EXPECTED_COMMIT"], commit
print("MLflow run", run.info.run_id, run.info.status, "loss", run.data.metrics["loss"],
      "artifacts", sorted(artifacts))
EOF
ls "$data/runs/docker-test"
step "test-build: all good"
