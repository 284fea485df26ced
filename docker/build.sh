#!/usr/bin/env bash
# Build and try the lung-nodule-mtl inference image with buildah: no Docker engine, no registry.
#
# Usage: docker/build.sh [COMMAND] [ARGS...]
#   build                 (default) make the base image if it is missing, then build the image
#   base                  only the base image: Debian bookworm minbase + python3 by debootstrap
#   luna25                the LUNA25 / grand-challenge image (docker/Dockerfile.luna25: the image with
#                         `lung-nodule-mtl luna25 -i /input -o /output` as ENTRYPOINT + CMD), built on the
#                         image (built first when missing); `IMAGE=<it> build.sh run CASE OUT` runs it as
#                         the platform does
#   run IN OUT [ARGS...]  run the image's entry point (`lung-nodule-mtl predict`) with buildah run:
#                         IN mounted read-only at /input, OUT at /output, no network; ARGS replace
#                         the image's CMD (default `-i /input -o /output`)
#   demo [DIR]            synthesise a small chest CT with the image, then `run` it (files in DIR)
#   check                 exit 0 if buildah works here (root, storage), 3 if not; installs nothing
#
# Environment (all optional):
#   IMAGE            image name (default localhost/lung-nodule-mtl:VERSION, also tagged :latest)
#   LUNA25_IMAGE     name of the `luna25` image (default IMAGE's name with the tag VERSION-luna25)
#   BASE_IMAGE       base image (default localhost/lung-nodule-mtl-base:bookworm, made offline-capable
#                    with debootstrap when missing and reused after that; another name, e.g.
#                    docker.io/library/python:3.11-slim, is pulled by buildah)
#   REBUILD_BASE=1   make the debootstrap base again
#   DEBIAN_MIRROR    (default http://deb.debian.org/debian), DEBIAN_SUITE (default bookworm)
#   TORCH_WHEEL_DIR  folder with a torch CPU wheel, given to the build as the `wheels` context
#                    (default: PIP_FIND_LINKS when it is a folder holding a torch wheel); with one,
#                    TORCH_SPEC defaults to that wheel's version and TORCH_INDEX_URL to empty
#   TORCH_SPEC, TORCH_INDEX_URL, VENV_OPTIONS   build arguments (see docker/Dockerfile)
#   CA_BUNDLE        host CA bundle mounted read-only at the same path while building, and given to
#                    pip as PIP_CERT (default /etc/ssl/certs/ca-certificates.crt when it exists)
#   BUILD_ARGS       more arguments for `buildah build` (split on spaces)
#   RUN_NETWORK      network of `run` and `demo` (default none: inference needs no network; host)
#   RUN_ENV          environment of `run`, NAME=VALUE separated by spaces (e.g. OMP_NUM_THREADS=1)
#   RUN_ENTRYPOINT   entry point of `run` instead of the image's, split on spaces: the LUNA25 mode is
#                    RUN_ENTRYPOINT="lung-nodule-mtl luna25" docker/build.sh run CASE OUT -i /input -o /output
#   BUILDAH_ISOLATION (default chroot)
#   STORAGE_DRIVER   buildah's storage driver (default: buildah's, overlay as root); vfs (also taken when
#                    the default does not work) keeps its own store in /var/lib/containers/storage-vfs
#                    and builds without cached layers
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/lung_nodule_mtl/_version.py")
: "${version:=unknown}"

DEFAULT_BASE=localhost/lung-nodule-mtl-base:bookworm
IMAGE=${IMAGE:-localhost/lung-nodule-mtl:$version}
LUNA25_IMAGE=${LUNA25_IMAGE:-${IMAGE%:*}:$version-luna25}
BASE_IMAGE=${BASE_IMAGE:-$DEFAULT_BASE}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
IMAGE_UID=10001 # the image's user (docker/Dockerfile)

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
image_exists() { bh inspect --type image "$1" >/dev/null 2>&1; }

# Storage that works here: buildah's default (overlay for root), else vfs (slower, always works) in a
# store of its own (buildah 1.28 ignores STORAGE_DRIVER in the environment: flags it is).
BUILDAH_OPTS=()
VFS_OPTS=(--storage-driver vfs --root /var/lib/containers/storage-vfs --runroot /run/containers/storage-vfs)
bh() { buildah "${BUILDAH_OPTS[@]}" "$@"; }
storage_ok() {
    local ctr rc=0
    ctr=$(bh from scratch 2>/dev/null) || return 1
    { bh mount "$ctr" && bh umount "$ctr"; } >/dev/null 2>&1 || rc=1
    bh rm "$ctr" >/dev/null 2>&1 || true
    return "$rc"
}
select_storage() {
    case ${STORAGE_DRIVER:-} in
    "") ;;
    vfs) BUILDAH_OPTS=("${VFS_OPTS[@]}") ;;
    *) BUILDAH_OPTS=(--storage-driver "$STORAGE_DRIVER") ;;
    esac
    storage_ok && return 0
    [[ -z ${STORAGE_DRIVER:-} ]] || return 1
    BUILDAH_OPTS=("${VFS_OPTS[@]}")
    STORAGE_DRIVER=vfs
    storage_ok || return 1
    log "storage: vfs in /var/lib/containers/storage-vfs (the default storage does not work here)"
}

# buildah (and debootstrap when the base image must be made): install with apt-get when missing.
ensure_tools() {
    local missing=() tool
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing ${missing[*]}; install them (Debian/Ubuntu: apt-get install ${missing[*]})"
    fi
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # buildah's runtime and storage helpers are Recommends on Debian 12
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq crun fuse-overlayfs uidmap >/dev/null || true
}

check() {
    [[ $(id -u) -eq 0 ]] || {
        log "not root: this script builds with rootful buildah and debootstrap"
        return 3
    }
    command -v buildah >/dev/null || {
        log "buildah is not installed"
        return 3
    }
    select_storage || {
        log "buildah cannot create and mount a container here (storage driver ${STORAGE_DRIVER:-default})"
        return 3
    }
    if [[ $BASE_IMAGE == "$DEFAULT_BASE" ]] && ! image_exists "$BASE_IMAGE" && ! command -v debootstrap >/dev/null; then
        log "no base image $BASE_IMAGE and no debootstrap to make it"
        return 3
    fi
    log "ok: buildah $(bh version --json 2>/dev/null | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p'), storage ${STORAGE_DRIVER:-default}"
}

# The base image: debootstrap -> tar -> buildah add onto scratch -> commit. Offline-capable: only the
# Debian mirror is needed, no registry.
make_base() {
    if image_exists "$BASE_IMAGE" && [[ ${REBUILD_BASE:-0} != 1 ]]; then
        log "base image $BASE_IMAGE exists: reused (REBUILD_BASE=1 remakes it)"
        return 0
    fi
    local start work ctr
    start=$(date +%s)
    work=$(mktemp -d "${TMPDIR:-/var/tmp}/lung-nodule-mtl-base.XXXXXX")
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    log "debootstrap $DEBIAN_SUITE (minbase + python3) from $DEBIAN_MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$DEBIAN_SUITE" "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed"
    }
    log "debootstrap done in $(($(date +%s) - start)) s"
    (
        cd "$work/rootfs"
        # apt caches and lists, documentation (the copyright files stay), the host's resolv.conf/hostname
        rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/* \
            usr/share/man/* usr/share/info/* usr/share/locale/* etc/resolv.conf etc/hostname
        find usr/share/doc -type f ! -name copyright -delete
        find usr/share/doc -type d -empty -delete
    )
    tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/rootfs.tar" .
    ctr=$(bh from scratch)
    bh add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
    bh config --env LANG=C.UTF-8 --cmd /bin/bash \
        --label org.opencontainers.image.title=lung-nodule-mtl-base \
        --label "org.opencontainers.image.description=Debian $DEBIAN_SUITE minbase + python3 (debootstrap)" \
        --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ctr"
    bh commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    rm -rf "$work"
    trap - EXIT
    log "base image $BASE_IMAGE made in $(($(date +%s) - start)) s ($(image_size "$BASE_IMAGE"))"
}

image_size() { bh images --format '{{.Size}}' "$1" 2>/dev/null | head -n 1; }

build() {
    # cached layers, except on vfs storage, where every cached step would be a full copy of the image
    local layers=--layers
    [[ ${STORAGE_DRIVER:-} != vfs ]] || layers=--layers=false
    local args=("$layers" --network host --isolation "$BUILDAH_ISOLATION" -f "$here/Dockerfile"
        --ignorefile "$here/Dockerfile.dockerignore" --build-arg "BASE_IMAGE=$BASE_IMAGE"
        -t "$IMAGE" -t "${IMAGE%:*}:latest")
    local revision created wheel_dir=${TORCH_WHEEL_DIR:-${PIP_FIND_LINKS:-}} wheel
    revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null) || revision=unknown
    [[ $revision == unknown ]] || git -C "$repo" diff --quiet HEAD 2>/dev/null || revision+="-dirty"
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    # as build arguments (docker) and as --label: buildah 1.28 reuses a cached LABEL step whose build
    # arguments changed, which would leave the previous build's revision and date on the image
    args+=(--build-arg "VERSION=$version" --label "org.opencontainers.image.version=$version"
        --build-arg "REVISION=$revision" --label "org.opencontainers.image.revision=$revision"
        --build-arg "CREATED=$created" --label "org.opencontainers.image.created=$created")
    if [[ -n $wheel_dir && -d $wheel_dir ]]; then
        wheel=$(find "$wheel_dir" -maxdepth 1 -name 'torch-*.whl' | sort | tail -n 1)
        if [[ -n $wheel ]]; then
            log "torch from the local wheel $wheel"
            args+=(--build-context "wheels=$wheel_dir")
            wheel=$(basename "$wheel")
            TORCH_SPEC=${TORCH_SPEC-$(cut -d- -f1-2 <<<"$wheel" | sed 's/-/==/')}
            TORCH_INDEX_URL=${TORCH_INDEX_URL-}
        fi
    fi
    [[ -z ${TORCH_SPEC+x} ]] || args+=(--build-arg "TORCH_SPEC=$TORCH_SPEC")
    [[ -z ${TORCH_INDEX_URL+x} ]] || args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    [[ -z ${VENV_OPTIONS+x} ]] || args+=(--build-arg "VENV_OPTIONS=$VENV_OPTIONS")
    if [[ -n $CA_BUNDLE && -f $CA_BUNDLE ]]; then
        args+=(-v "$CA_BUNDLE:$CA_BUNDLE:ro" --build-arg "PIP_CERT=$CA_BUNDLE")
    fi
    local var
    for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
        [[ -z ${!var:-} ]] || args+=(--build-arg "$var=${!var}")
    done
    # shellcheck disable=SC2206 # BUILD_ARGS is split on purpose
    [[ -z ${BUILD_ARGS:-} ]] || args+=(${BUILD_ARGS})

    local start
    start=$(date +%s)
    log "buildah ${BUILDAH_OPTS[*]} build ${args[*]} $repo"
    bh build "${args[@]}" "$repo"
    log "image $IMAGE built in $(($(date +%s) - start)) s ($(image_size "$IMAGE"))"
}

# The LUNA25 image: Dockerfile.luna25 copies nothing, so it is built from an empty context.
build_luna25() {
    image_exists "$IMAGE" || build
    local context start
    context=$(mktemp -d "${TMPDIR:-/tmp}/lung-nodule-mtl-luna25.XXXXXX")
    start=$(date +%s)
    log "buildah build -f $here/Dockerfile.luna25 --build-arg IMAGE=$IMAGE -t $LUNA25_IMAGE"
    bh build --isolation "$BUILDAH_ISOLATION" --pull=never -f "$here/Dockerfile.luna25" --build-arg "IMAGE=$IMAGE" \
        -t "$LUNA25_IMAGE" "$context" || {
        rmdir "$context"
        die "the LUNA25 image failed to build"
    }
    rmdir "$context"
    log "image $LUNA25_IMAGE built in $(($(date +%s) - start)) s ($(image_size "$LUNA25_IMAGE"))"
}

# buildah run, by default without network (RUN_NETWORK=none): chroot isolation cannot make a network
# namespace itself, so buildah runs inside one (unshare --net; only loopback there).
brun() {
    local network=${RUN_NETWORK:-none}
    if [[ $network == none && $BUILDAH_ISOLATION == chroot ]]; then
        unshare --net buildah "${BUILDAH_OPTS[@]}" run --isolation chroot "$@"
    else
        bh run --isolation "$BUILDAH_ISOLATION" --network "$network" "$@"
    fi
}

# A working container of the image, without the image's VOLUMEs: buildah 1.28 mounts fresh anonymous
# volumes over /input and /output instead of the -v bind mounts when both are given (docker and podman
# do not), so they are dropped from this container's configuration (the image keeps them).
from_image() {
    local ctr volume args=()
    # shellcheck disable=SC2016 # a Go template, not shell
    local volumes='{{range $v, $_ := .OCIv1.Config.Volumes}}{{println $v}}{{end}}'
    ctr=$(bh from --quiet "$IMAGE")
    while IFS= read -r volume; do
        [[ -z $volume ]] || args+=(--volume "$volume-")
    done < <(bh inspect --format "$volumes" "$ctr")
    ((${#args[@]} == 0)) || bh config "${args[@]}" "$ctr"
    echo "$ctr"
}

# The image's entry point and CMD, as `docker run IMAGE [ARGS]` would run them.
run_image() {
    (($# >= 2)) || die "usage: build.sh run INPUT_DIR OUTPUT_DIR [PREDICT_ARGS...]"
    local input=$1 output=$2
    shift 2
    [[ -d $input ]] || die "no input folder $input"
    image_exists "$IMAGE" || die "no image $IMAGE: run docker/build.sh first"
    if [[ ! -d $output ]]; then
        mkdir -p "$output"
        chown "$IMAGE_UID:$IMAGE_UID" "$output" 2>/dev/null || chmod 0777 "$output"
    fi
    input=$(realpath "$input")
    output=$(realpath "$output")
    local entrypoint=() cmd=() ctr rc=0
    mapfile -t entrypoint < <(bh inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE")
    mapfile -t cmd < <(bh inspect --type image --format '{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' "$IMAGE")
    (($#)) && cmd=("$@")
    # shellcheck disable=SC2206 # RUN_ENTRYPOINT is split on purpose
    [[ -n ${RUN_ENTRYPOINT:-} ]] && entrypoint=(${RUN_ENTRYPOINT})
    ctr=$(from_image)
    log "running ${entrypoint[*]} ${cmd[*]} as uid $(brun "$ctr" -- id -u) ($input -> /input:ro, $output -> /output, network ${RUN_NETWORK:-none})"
    local start
    start=$(date +%s)
    local env=() var
    # shellcheck disable=SC2086 # RUN_ENV is split on purpose
    for var in ${RUN_ENV:-}; do env+=(-e "$var"); done
    brun "${env[@]}" -v "$input:/input:ro" -v "$output:/output" "$ctr" -- "${entrypoint[@]}" "${cmd[@]}" || rc=$?
    bh rm "$ctr" >/dev/null
    log "entry point exited $rc after $(($(date +%s) - start)) s"
    return "$rc"
}

# A small synthetic scan made by the image itself, then the entry point on it.
demo() {
    local dir=${1:-}
    [[ -n $dir ]] || dir=$(mktemp -d "${TMPDIR:-/tmp}/lung-nodule-mtl-demo.XXXXXX")
    mkdir -p "$dir/synth" "$dir/input" "$dir/output"
    chown "$IMAGE_UID:$IMAGE_UID" "$dir/synth" "$dir/output" 2>/dev/null || chmod 0777 "$dir/synth" "$dir/output"
    image_exists "$IMAGE" || die "no image $IMAGE: run docker/build.sh first"
    local ctr
    ctr=$(from_image)
    brun -v "$dir/synth:/synth" "$ctr" -- \
        lung-nodule-mtl synth --out /synth --mode scans --cases 2 --folds 2 --test-fraction 0 \
        --scan-shape 128 128 48 >/dev/null || {
        bh rm "$ctr" >/dev/null
        die "synth failed"
    }
    bh rm "$ctr" >/dev/null
    cp "$(find "$dir/synth/images" -name '*.nii.gz' | sort | head -n 1)" "$dir/input/"
    run_image "$dir/input" "$dir/output"
    log "demo outputs in $dir/output:"
    ls -l "$dir/output" >&2
}

command=${1:-build}
(($#)) && shift
case $command in
check)
    check
    ;;
base | build | luna25)
    [[ $(id -u) -eq 0 ]] || die "run as root (rootful buildah, debootstrap)"
    ensure_tools buildah
    select_storage || die "buildah cannot create and mount a container here"
    [[ $BASE_IMAGE != "$DEFAULT_BASE" ]] || image_exists "$BASE_IMAGE" || ensure_tools debootstrap
    # One build at a time on this machine (CI runs and people share the image store).
    exec 9>"${TMPDIR:-/tmp}/lung-nodule-mtl-build.lock"
    flock 9
    [[ $BASE_IMAGE != "$DEFAULT_BASE" ]] || make_base
    case $command in
    build) build ;;
    luna25) build_luna25 ;;
    esac
    ;;
run)
    select_storage || die "buildah cannot create and mount a container here"
    run_image "$@"
    ;;
demo)
    select_storage || die "buildah cannot create and mount a container here"
    demo "$@"
    ;;
-h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    ;;
*)
    die "unknown command $command (build, base, luna25, run, demo, check, help)"
    ;;
esac
