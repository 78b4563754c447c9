#!/usr/bin/env bash
# Downloads what StarGAN v2 needs from the official release.
#   bash download.sh wing                  # FAN weights + mean landmarks (CelebA-HQ, align mode)
#   bash download.sh celeba-hq-model       # released CelebA-HQ model  -> expr/checkpoints/celeba_hq/
#   bash download.sh afhq-model            # released AFHQ model       -> expr/checkpoints/afhq/
#   bash download.sh celeba-hq-dataset     # -> data/celeba_hq/{train,val}
#   bash download.sh afhq-dataset          # -> data/afhq/{train,val}
#   bash download.sh afhq-v2-dataset       # -> data/afhq_v2/{train,test}
#   bash download.sh assets                # sample photos -> assets/representative/
# ImageNet weights for the metrics (Inception v3, AlexNet) are fetched by torchvision
# into $TORCH_HOME/hub/checkpoints on first use.
set -euo pipefail
cd "$(dirname "$0")"

fetch() {  # url file
    mkdir -p "$(dirname "$2")"
    if [ -s "$2" ]; then echo "$2 already there"; return; fi
    echo "downloading $2"
    curl -fL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"
}

unzip_to() {  # url zip folder
    fetch "$1" "$2"
    mkdir -p "$3" && unzip -q -o "$2" -d "$3" && rm -f "$2"
}

case "${1:-}" in
    wing)
        fetch "https://www.dropbox.com/s/tjxpypwpt38926e/wing.ckpt?dl=1" expr/checkpoints/wing.ckpt
        fetch "https://www.dropbox.com/s/91fth49gyb7xksk/celeba_lm_mean.npz?dl=1" expr/checkpoints/celeba_lm_mean.npz ;;
    celeba-hq-model)
        fetch "https://www.dropbox.com/s/96fmei6c93o8b8t/100000_nets_ema.ckpt?dl=1" expr/checkpoints/celeba_hq/100000_nets_ema.ckpt ;;
    afhq-model)
        fetch "https://www.dropbox.com/s/etwm810v25h42sn/100000_nets_ema.ckpt?dl=1" expr/checkpoints/afhq/100000_nets_ema.ckpt ;;
    celeba-hq-dataset)
        unzip_to "https://www.dropbox.com/s/f7pvjij2xlpff59/celeba_hq.zip?dl=1" data/celeba_hq.zip data ;;
    afhq-dataset)
        unzip_to "https://www.dropbox.com/s/t9l9o3vsx2jai3z/afhq.zip?dl=1" data/afhq.zip data ;;
    afhq-v2-dataset)
        unzip_to "https://www.dropbox.com/s/vkzjokiwof5h8w6/afhq_v2.zip?dl=1" data/afhq_v2.zip data ;;
    assets)
        tmp=$(mktemp -d)
        fetch "https://github.com/clovaai/stargan-v2/archive/refs/heads/master.zip" "$tmp/stargan-v2.zip"
        unzip -q "$tmp/stargan-v2.zip" 'stargan-v2-master/assets/representative/*' -d "$tmp"
        mkdir -p assets && cp -r "$tmp/stargan-v2-master/assets/representative" assets/ && rm -rf "$tmp" ;;
    *)
        sed -n '2,12p' "$0"; exit 1 ;;
esac
