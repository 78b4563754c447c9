#!/usr/bin/env bash
# Downloads what StarGAN v2 needs from the official release, into the official paths.
#
#   bash download.sh pretrained-network-celeba-hq  # -> expr/checkpoints/celeba_hq/100000_nets_ema.ckpt
#   bash download.sh pretrained-network-afhq       # -> expr/checkpoints/afhq/100000_nets_ema.ckpt
#   bash download.sh wing                          # -> expr/checkpoints/{wing.ckpt,celeba_lm_mean.npz}
#   bash download.sh celeba-hq-dataset             # -> data/celeba_hq/{train,val}
#   bash download.sh afhq-dataset                  # -> data/afhq/{train,val}
#   bash download.sh afhq-v2-dataset               # -> data/afhq_v2/
#   bash download.sh assets                        # sample photos -> assets/representative/
#                                                  #   (from the official git repository's zip)
# celeba-hq-model and afhq-model are our older names of the two pretrained networks.
#
# Every file goes to NAME.part first (a broken download resumes from there when run
# again), is checked (not empty, not an HTML error page, zips tested with unzip -t,
# checkpoints loaded with torch.load, .npz files read with numpy) and only then renamed
# to NAME. A NAME already there is checked the same way: a broken one is fetched again.
# Archives are unpacked into a temporary folder beside the target (data/.unzip.PID.*)
# and renamed into place when complete; Ctrl-C, SIGTERM or a failure removes that folder,
# and a later run removes one left by a killed run.
# Exit status: 0 done, 1 a download failed (the message names the file, its URL and
# where to put a copy by hand), 2 unknown argument.
# STARGAN_DOWNLOAD_FROM=DIR: copy from DIR/<target path> (e.g. DIR/expr/checkpoints/wing.ckpt,
# DIR/data/afhq.zip, DIR/assets/stargan-v2-master.zip) instead of the network.
# ImageNet weights for the metrics (Inception v3, AlexNet) are fetched by torchvision
# into $TORCH_HOME/hub/checkpoints on first use.
set -uo pipefail
cd "$(dirname "$0")"

DROPBOX=https://www.dropbox.com/s
ASSETS_URL=https://github.com/clovaai/stargan-v2/archive/refs/heads/master.zip

usage() {
    echo "usage: bash download.sh NAME, NAME one of:"
    echo "  pretrained-network-celeba-hq (alias celeba-hq-model), pretrained-network-afhq (alias afhq-model),"
    echo "  wing, celeba-hq-dataset, afhq-dataset, afhq-v2-dataset, assets"
}

fail() {  # file url
    echo "error: could not download $1 from $2" >&2
    local kept=""
    [ -s "$1.part" ] && kept=" (the partial copy $1.part is kept: run again to resume)"
    echo "  download it by hand and put it at $(pwd)/$1$kept" >&2
    exit 1
}

UNZIP_TMP=""   # the temporary folder being unpacked into (removed on any exit)
UNZIP_PID=""
cleanup() {
    if [ -n "$UNZIP_PID" ]; then kill "$UNZIP_PID" 2> /dev/null; wait "$UNZIP_PID" 2> /dev/null; fi
    if [ -n "$UNZIP_TMP" ]; then rm -rf "$UNZIP_TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

loads() {  # file name: a checkpoint torch.load reads, an .npz numpy reads (skipped without python3 and torch)
    local rc
    python3 - "$1" "$2" > /dev/null 2>&1 <<'PY'
import sys
path, name = sys.argv[1], sys.argv[2]
try:
    import numpy as np
    if name.endswith('.ckpt'):
        import torch
except ImportError:
    sys.exit(3)
try:
    if name.endswith('.ckpt'):
        torch.load(path, map_location='cpu', weights_only=True)
    else:
        with np.load(path) as data:
            [data[k] for k in data.files]
except Exception:
    sys.exit(1)
PY
    rc=$?
    if [ $rc -eq 3 ] || [ $rc -eq 127 ]; then
        echo "note: python3 with torch and numpy not found: $2 was not test-loaded" >&2
        return 0
    fi
    return $rc
}

check() {  # file [name]: prints why the file is broken and fails, or succeeds
    local file=$1 name=${2:-$1}
    if [ ! -s "$file" ]; then echo "empty"; return 1; fi
    if head -c 512 "$file" | tr 'A-Z' 'a-z' | grep -q -e '<!doctype html' -e '<html'; then
        echo "an HTML page"; return 1
    fi
    case "$name" in
        *.zip) unzip -tq "$file" > /dev/null 2>&1 || { echo "a zip that fails unzip -t"; return 1; } ;;
        *.ckpt) loads "$file" "$name" || { echo "a checkpoint torch.load cannot read"; return 1; } ;;
        *.npz) loads "$file" "$name" || { echo "an .npz numpy cannot read"; return 1; } ;;
    esac
    return 0
}

fetch() {  # url file: to file.part (resumed), checked, then renamed to file
    local url=$1 file=$2 part=$2.part why
    if [ -e "$file" ]; then
        if why=$(check "$file"); then echo "$file already there"; return 0; fi
        echo "$file is there but broken ($why): fetching it again" >&2
        rm -f "$file"
    fi
    mkdir -p "$(dirname "$file")"
    if [ -n "${STARGAN_DOWNLOAD_FROM:-}" ]; then url="file://$(cd "$STARGAN_DOWNLOAD_FROM" && pwd)/$file"; fi
    echo "downloading $file"
    if command -v curl > /dev/null; then
        curl -fL --retry 3 -C - -o "$part" "$url"
        local rc=$?
        # 33: the server cannot resume; 36: nothing left to resume (the .part is already complete)
        if [ $rc -eq 33 ]; then rm -f "$part"; curl -fL --retry 3 -o "$part" "$url"; rc=$?; fi
        if [ $rc -ne 0 ] && [ $rc -ne 36 ]; then fail "$file" "$url"; fi
    else
        wget -c -O "$part" "$url" || fail "$file" "$url"
    fi
    if ! why=$(check "$part" "$file"); then
        echo "error: $file.part from $url is not a valid file ($why); removed it" >&2
        rm -f "$part"
        fail "$file" "$url"
    fi
    mv -f "$part" "$file"
}

remove_stale() {  # folder: temporary folders left by runs that were killed (their process is gone)
    local d pid
    for d in "$1"/.unzip.*; do
        [ -d "$d" ] || continue
        pid=${d##*/.unzip.}; pid=${pid%%.*}
        if ! kill -0 "$pid" 2> /dev/null; then rm -rf "$d"; fi
    done
}

unzip_to() {  # zip folder [only]: unpack into UNZIP_TMP, a new temporary folder in folder
    local zip=$1 dest=$2 only=${3:-}
    mkdir -p "$dest"
    remove_stale "$dest"
    UNZIP_TMP=$(mktemp -d "$dest/.unzip.$$.XXXXXX") || exit 1
    unzip -q -o "$zip" ${only:+"$only"} -d "$UNZIP_TMP" &
    UNZIP_PID=$!
    if ! wait "$UNZIP_PID"; then
        UNZIP_PID=""; echo "error: could not unpack $zip" >&2; exit 1
    fi
    UNZIP_PID=""
}

dataset() {  # url name: data/name.zip -> data/name/
    local url=$1 name=$2
    if [ -d "data/$name" ]; then echo "data/$name already there"; return 0; fi
    fetch "$url" "data/$name.zip"
    unzip_to "data/$name.zip" data
    local entries=("$UNZIP_TMP"/*)
    if [ ${#entries[@]} -eq 1 ] && [ -d "${entries[0]}" ] && [ "$(basename "${entries[0]}")" = "$name" ]; then
        mv "${entries[0]}" "data/$name"
    else
        mv "$UNZIP_TMP" "data/$name"   # the archive has no top folder of that name
    fi
    rm -rf "$UNZIP_TMP"; UNZIP_TMP=""
    rm -f "data/$name.zip"
    echo "data/$name ready"
}

case "${1:-}" in
    pretrained-network-celeba-hq|celeba-hq-model)
        fetch "$DROPBOX/96fmei6c93o8b8t/100000_nets_ema.ckpt?dl=1" expr/checkpoints/celeba_hq/100000_nets_ema.ckpt ;;
    pretrained-network-afhq|afhq-model)
        fetch "$DROPBOX/etwm810v25h42sn/100000_nets_ema.ckpt?dl=1" expr/checkpoints/afhq/100000_nets_ema.ckpt ;;
    wing)
        fetch "$DROPBOX/tjxpypwpt38926e/wing.ckpt?dl=1" expr/checkpoints/wing.ckpt
        fetch "$DROPBOX/91fth49gyb7xksk/celeba_lm_mean.npz?dl=1" expr/checkpoints/celeba_lm_mean.npz ;;
    celeba-hq-dataset)
        dataset "$DROPBOX/f7pvjij2xlpff59/celeba_hq.zip?dl=1" celeba_hq ;;
    afhq-dataset)
        dataset "$DROPBOX/t9l9o3vsx2jai3z/afhq.zip?dl=1" afhq ;;
    afhq-v2-dataset)
        dataset "$DROPBOX/vkzjokiwof5h8w6/afhq_v2.zip?dl=1" afhq_v2 ;;
    assets)
        if [ -d assets/representative ]; then echo "assets/representative already there"; exit 0; fi
        fetch "$ASSETS_URL" assets/stargan-v2-master.zip
        unzip_to assets/stargan-v2-master.zip assets 'stargan-v2-master/assets/representative/*'
        mv "$UNZIP_TMP/stargan-v2-master/assets/representative" assets/representative || exit 1
        rm -rf "$UNZIP_TMP"; UNZIP_TMP=""
        rm -f assets/stargan-v2-master.zip
        echo "assets/representative ready (photos (c) NAVER Corp., CC BY-NC 4.0)" ;;
    -h|--help)
        usage ;;
    *)
        [ -n "${1:-}" ] && echo "error: unknown argument '$1'" >&2
        usage >&2
        exit 2 ;;
esac
