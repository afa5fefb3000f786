# mvdrive: every target works on a fresh Debian 12 machine; `demo` and `test` run `setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(abspath $(VENV))/bin/python
STAMPS  := .stamps
PREP    := target/release/prep
TRAIN   := target/release/train
DEMO    := demo-out
APT_PKGS := pkg-config libavformat-dev libavcodec-dev libavutil-dev libswscale-dev \
            libclang1-14 libclang-common-14-dev ffmpeg python3-venv fonts-dejavu-core \
            libturbojpeg0-dev libgloo-dev
# libtorch comes from the pinned PyPI wheel (see docs/architecture.md); numpy + pyarrow run the
# Python reader example (schemas/python/) and its test (pillow decodes jpeg records); av
# (PyAV) is the reference of make bench-loader.
PIP_TORCH := torch==2.11.0
PIP_CUDA  := cuda-toolkit[cudart,cupti]==13.0.2
PIP_PY    := numpy==2.4.6 pyarrow==26.0.1 av==18.1.0 pillow==13.0.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export MVDRIVE_PYTHON := $(PY)

.PHONY: help setup build demo test lint fuzz bench-prep bench-loader bench-memory bench-venv bench-predict bench-dist gpu-check clean

help:
	@echo "make setup       install apt packages, the libtorch wheel venv, and build (idempotent)"
	@echo "make demo        synthetic dataset -> prep build -> verify -> inspect -> train fit -> eval -> predict"
	@echo "make test        every test (unit + end-to-end)"
	@echo "make lint        cargo fmt --check and clippy"
	@echo "make fuzz        2000 mutated caches per codec through every cache reader (make test runs 60)"
	@echo "make bench-prep  prep vs the ffmpeg CLI on generated 720p/1080p 60 s clips"
	@echo "make bench-loader  loader vs memcpy and vs PyAV decoding; train RSS on a cache and one 8x larger"
	@echo "make bench-memory  checkpointing, bf16/fp16, batch 1, accumulation on/off per backbone: peak memory, step time, gradients"
	@echo "make bench-venv  the PyTorch peer's venv (.bench-venv: torch + torchvision, several GB); bench-memory only"
	@echo "make bench-predict  train predict throughput (R(2+1)D, transformer at 112x112) and RSS on sessions 8x longer"
	@echo "make bench-dist  data-parallel training: 1 vs 2 gloo ranks (steps/s), gradient all-reduce vs memcpy"
	@echo "make gpu-check   prepare gpu-check/ (cuda binaries, caches, scripts) for scripts/gpu_check.sh on a GPU machine"

setup: $(STAMPS)/apt $(STAMPS)/venv build

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@if dpkg -s $(APT_PKGS) >/dev/null 2>&1; then echo "setup: apt packages present"; else \
	  echo "setup: installing $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PKGS); fi
	@touch $@

$(STAMPS)/venv: $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@[ -x $(VENV)/bin/pip ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps $(PIP_TORCH)
	$(VENV)/bin/pip install -q --disable-pip-version-check "$(PIP_CUDA)" $(PIP_PY)
	@ln -sfn "$$(cd $(VENV) && ls -d lib/python3*/site-packages/torch | head -1)" $(VENV)/libtorch
	@test -f $(VENV)/libtorch/lib/libtorch_cpu.so || { echo "setup: libtorch missing under $(VENV)/libtorch"; exit 1; }
	@touch $@

# make bench-memory's PyTorch eager peer (bench/torch_peer.py, bench/memory_vs_torch.sh) runs in a
# venv of its own: the full torch wheel (`import torch` loads every CUDA library it links, even
# on CPU, so its nvidia-* dependencies come too: several GB) and torchvision. Only bench-memory
# needs it; setup and test do not.
BENCH_VENV := .bench-venv
PIP_BENCH  := torch==2.11.0 torchvision==0.26.0 numpy==2.4.6 pillow==13.0.0

bench-venv: $(STAMPS)/bench-venv

$(STAMPS)/bench-venv: $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@[ -x $(BENCH_VENV)/bin/pip ] || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check $(PIP_BENCH)
	$(BENCH_VENV)/bin/python -c "import torch, torchvision; assert torch.randn(2).sum().isfinite(); \
	  print('bench-venv: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	@touch $@

build: $(STAMPS)/apt $(STAMPS)/venv
	cargo build --release --workspace --all-targets

demo: setup
	rm -rf $(DEMO)
	$(PREP) synth --out $(DEMO)/data --sessions 12 --seed 0
	$(PREP) build --manifest $(DEMO)/data/manifest.csv --segments $(DEMO)/data/segments.csv \
	    --out $(DEMO)/cache data.img_size=64 prep.fps=8 data.max_video_frames=64
	$(PREP) verify $(DEMO)/cache
	$(PREP) inspect $(DEMO)/cache
	$(PREP) export-frames $(DEMO)/cache --session s001 --view front --start 0 --count 4 --out $(DEMO)/frames
	$(TRAIN) fit --cache $(DEMO)/cache $(DEMO_TRAIN) trainer.log_dir=$(DEMO)/logs trainer.experiment=demo
	$(TRAIN) eval --ckpt $(DEMO)/logs/demo/version_0/checkpoints/best.safetensors --cache $(DEMO)/cache \
	    --split test --out $(DEMO)/eval-test
	$(TRAIN) predict --ckpt $(DEMO)/logs/demo/version_0/checkpoints/best.safetensors --cache $(DEMO)/cache \
	    --sessions s006,s012 --out $(DEMO)/predict
	@echo "demo: cache $(DEMO)/cache; run $(DEMO)/logs/demo/version_0 (metrics.csv, metrics.png, confusion.png); test split in $(DEMO)/eval-test; timelines of the test driver's sessions in $(DEMO)/predict/timeline"

# The demo's training settings: small and fast on 2 CPU cores (about 1.5 minutes). Without
# augmentation: 6 epochs on 8 training sessions are too few to learn from random crops.
# train.monitor=val_loss: with 12 validation segments, top-1 and F1 tie across epochs and
# the first of a tie would be kept; the loss tells those epochs apart.
DEMO_TRAIN := data.img_size=64 data.uniform_temporal_subsample_num=8 data.batch_size=4 \
    train.max_epochs=6 train.view=single train.view_name=front train.lr=0.0005 \
    data.aug.enabled=false train.monitor=val_loss

test: setup
	cargo test --release --workspace 2>&1

lint: setup
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fuzz: setup
	MVDRIVE_FUZZ_CASES=2000 MVDRIVE_FUZZ_SEED=$${SEED:-1} cargo test --release -p mvdrive-prep --test fuzz -- --nocapture

bench-prep: setup
	bash bench/prep_vs_ffmpeg.sh

bench-loader: setup
	bash bench/loader.sh

bench-memory: setup $(STAMPS)/bench-venv
	bash bench/memory.sh

bench-dist: setup
	bash bench/dist.sh

bench-predict: setup
	bash bench/predict.sh

gpu-check: setup
	bash scripts/gpu_bundle.sh gpu-check

clean:
	rm -rf $(DEMO) bench-out gpu-check gpu-check-out target/release/prep target/release/train
