#!/usr/bin/env bash
# Pack the Python packages a GPU machine lacks into two archives a device session can carry.
#
#   bash benchmarks/pack_device_env.sh [--python-version 3.12] [--out .device-env]
#
# The GPU machine has torch, transformers 5, numpy, scipy, pandas and pytest, no network and a
# 64 MiB limit on what travels (the checkout is ~39 MiB of it). It lacks:
#   site-dev.tar.xz  what circuit_trace needs on top: nnsight 0.8 and its compiled needs (pydantic,
#                    greenlet, zstandard); plotly is left out (only the viewer's figures import it)
#   site-ct.tar.xz   circuit-tracer 0.5.0 for gpu_check.sh's reference step, with the versions it pins
#                    (transformers 4.57, huggingface-hub < 1, nnsight 0.6, transformer-lens 2.16),
#                    put first on PYTHONPATH so they shadow the machine's. To fit, transformers keeps
#                    only the model folders circuit-tracer and transformer-lens load here (auto, gpt2,
#                    gemma2 and their neighbours), jedi drops its bundled typeshed stubs (completion
#                    data), and `wandb` (imported by transformer_lens.train, never called by attribution)
#                    is an empty module.
# Wheels come from the package index for the target Python (--python-version, default the GPU
# image's 3.12) and manylinux x86-64; nothing is built. On the GPU machine:
#   mkdir -p /tmp/site-dev /tmp/site-ct
#   tar -xJf .device-env/site-dev.tar.xz -C /tmp/site-dev; tar -xJf .device-env/site-ct.tar.xz -C /tmp/site-ct
#   PYTHONPATH=/tmp/site-dev CT_PYTHON="env PYTHONPATH=/tmp/site-ct:/tmp/site-dev python3" \
#       bash benchmarks/gpu_check.sh --out $OUT
set -euo pipefail
PYV=3.12
OUT=.device-env
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) PYV=${2:?}; shift ;;
        --out) OUT=${2:?}; shift ;;
        *) echo "pack_device_env.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

DEV_PKGS=(nnsight==0.8.1 greenlet pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection
    websocket-client zstandard)
CT_PKGS=(circuit-tracer==0.5.0 transformer-lens==2.16.1 nnsight==0.6.3 transformers==4.57.3 huggingface-hub==0.36.0
    tokenizers==0.22.1 beartype==0.14.1 better-abc==0.0.3 datasets==4.4.1 dill multiprocess fancy-einsum typeguard
    astor toml python-socketio python-engineio bidict simple-websocket wsproto "ipython<9" decorator jedi parso
    matplotlib-inline pexpect ptyprocess prompt-toolkit wcwidth stack-data executing asttokens pure-eval traitlets)
# transformers/models folders kept in site-ct (everything else is a model family nobody loads here)
KEEP_MODELS="auto gpt2 gemma gemma2 gemma3 llama bert t5 encoder_decoder"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# install_target DIR PKG...: wheels for the target Python, unpacked into DIR without dependencies
install_target() {
    local dir=$1
    shift
    python -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version "$PYV" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 --target "$dir" "$@"
}

install_target "$WORK/site-dev" "${DEV_PKGS[@]}"
install_target "$WORK/site-ct" "${CT_PKGS[@]}"

for d in "$WORK"/site-ct/transformers/models/*/; do
    name=$(basename "$d")
    case " $KEEP_MODELS " in *" $name "*) ;; *) rm -rf "$d" ;; esac
done
rm -rf "$WORK"/site-ct/jedi/third_party
mkdir -p "$WORK/site-ct/wandb"
echo '"""Empty stand-in: transformer_lens.train imports wandb; attribution never calls it."""' \
    > "$WORK/site-ct/wandb/__init__.py"
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p "$OUT"
for s in site-dev site-ct; do
    tar -C "$WORK/$s" -cJf "$OUT/$s.tar.xz.tmp" . && mv "$OUT/$s.tar.xz.tmp" "$OUT/$s.tar.xz"
done
du -h "$OUT"/*.tar.xz
