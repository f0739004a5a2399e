# Two commands for a newcomer: `make demo` and `make test`. Every target builds .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_DIR    ?= runs/demo_cfg
VAE_DEMO_DIR ?= runs/demo_vae
EVALUATORS  ?= $(or $(JAXGEN_EVALUATORS),runs/evaluators)

.PHONY: demo demo-vae evaluators test test-all lint bench install clean fashion-mnist peer

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,perceptual]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
fashion-mnist:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's dataset-fashion-mnist ..."; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)); \
	fi; \
	if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST not found in $(FASHION_DIR)."; \
	  echo "Install it with:  sudo apt-get install dataset-fashion-mnist"; \
	  echo "or point FASHION_DIR at a folder holding the four IDX files."; \
	  exit 1; \
	fi

# The flagship: a class-conditional diffusion model with classifier-free guidance.
demo: $(STAMP) fashion-mnist
	$(PY) train.py --config=configs/diffusion.py:fashion_mnist,demo,cond --workdir=$(DEMO_DIR) \
	  --config.data.path=$(FASHION_DIR)
	$(PY) sample.py --workdir=$(DEMO_DIR) --sampler=dpm_solver++ --steps=20 --guidance=cfg \
	  --scale=3 --class=all --num=80 --out=$(DEMO_DIR)/cfg_samples.png
	@echo "One row per class (DPM-Solver++, 20 steps, CFG w=3): $(DEMO_DIR)/cfg_samples.png"

demo-vae: $(STAMP) fashion-mnist
	$(PY) train.py --config=configs/vae.py:fashion_mnist,demo --workdir=$(VAE_DEMO_DIR) \
	  --config.data.path=$(FASHION_DIR)
	$(PY) sample.py --workdir=$(VAE_DEMO_DIR) --num=64 --out=$(VAE_DEMO_DIR)/samples.png
	$(PY) sample.py --workdir=$(VAE_DEMO_DIR) --num=64 --reconstruct \
	  --out=$(VAE_DEMO_DIR)/reconstructions.png
	@echo "Samples:         $(VAE_DEMO_DIR)/samples.png"
	@echo "Reconstructions: $(VAE_DEMO_DIR)/reconstructions.png"

# The evaluators every metric of jaxgen.eval is computed with (README, Evaluation): one clean
# classifier per data set; about 15 and 35 minutes on a 2-core CPU. A finished one is kept.
evaluators: $(STAMP) fashion-mnist
	$(PY) train.py --config=configs/classifier.py:mnist,evaluator --workdir=$(EVALUATORS)/mnist
	$(PY) train.py --config=configs/classifier.py:fashion_mnist,evaluator \
	  --workdir=$(EVALUATORS)/fashion_mnist --config.data.path=$(FASHION_DIR)

# The newcomer's tier: pure functions, properties, configs, contract units and single steps.
FAST := not slow and not cli and not multihost

test: $(STAMP)
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -n 2 --dist loadfile -m "$(FAST)" --durations=10 tests

# Everything (CI runs this through .ci/run): CLI subprocesses, multi-host, learning to a bar,
# real data and the full hypothesis profile.
test-all: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -n 2 --dist loadfile --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A quick pass of every benchmark and table driver (tiny sizes, fresh tiny runs), into
# $BENCH_QUICK_DIR (default runs/bench_quick), never over bench/results/. The full tables:
# each script without --quick (its docstring has the command).
bench: $(STAMP)
	set -e; export BENCH_QUICK_DIR="$${BENCH_QUICK_DIR:-runs/bench_quick}"; \
	rm -rf "$$BENCH_QUICK_DIR/runs" "$$BENCH_QUICK_DIR/images"; \
	for s in vae_throughput vqvae_throughput gan_throughput vqgan_throughput prior_throughput \
	  diffusion_throughput diffusion_solver_error vqvae_restarts input_pipeline attention_layout; do \
	  echo "== bench/$$s.py --quick"; $(PY) bench/$$s.py --quick; done; \
	for s in vqgan_compare prior_compare eval_table ldm_table; do \
	  echo "== bench/$$s.py --run --quick"; $(PY) bench/$$s.py --run --quick; done; \
	$(PY) bench/guidance_tradeoff.py --quick; \
	echo "Quick tables: $$BENCH_QUICK_DIR"

# The PyTorch peers of bench/cpu_peer.py, in a venv of their own (never the project's):
# torch 2.13.0 is the CPU build these machines keep on disk; an unpinned torch pulls a CUDA
# build of several GB.
PEER_VENV := .peer
peer:
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q torch==2.13.0 diffusers==0.42.1

clean:
	rm -rf $(VENV) runs
