# vinted-tagger: `make demo` runs the whole job on synthetic data, `make test` runs the tests.
PYTHON ?= python3.11
# PyTorch is only needed to export encoders to ONNX (once). These pins install from local files on our
# build machines; elsewhere override, e.g. TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DATA := demo-data
DEMO_OUT := demo-out
CLOTHING ?= ../shared/data/clothing
# Embedding cache of the stand-in images by the default encoder (outside the repo; resumable): named after
# embed/pipeline.py's DEFAULT_ENCODER, so that adopting another encoder (make adopt) starts a cache of its own.
# FROZEN_CACHE: the ImageNet encoder's, which make finetune compares the fine-tuned ones with.
DEFAULT_ENCODER := $(shell sed -n 's/^DEFAULT_ENCODER = "\(.*\)"$$/\1/p' embed/pipeline.py)
CLOTHING_CACHE ?= $(HOME)/.cache/vinted-tagger/caches/clothing-$(DEFAULT_ENCODER)-openvino-bf16
FROZEN_CACHE ?= $(HOME)/.cache/vinted-tagger/caches/clothing-efficientnet-lite2-openvino-bf16

# Fine-tuning runs (one folder per variant, resumable) and the adapted encoders' caches (outside the repo).
FINETUNE_RUNS ?= $(HOME)/.cache/vinted-tagger/finetune

.PHONY: setup test demo bench bench-embed bench-heads bench-service bench-service-baseline bench-page bench-variants bench-scale \
	bench-runtime bench-formats calibrate notebook serve model predictions finetune adopt page-screenshot docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all]'
	$(BIN)/embed --export-only
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m devtools.demo_data $(DEMO_DATA)
	$(BIN)/embed $(DEMO_DATA)/data.zip --out $(DEMO_OUT)/cache --quiet
	$(BIN)/classify train --data $(DEMO_DATA)/data.parquet --cache $(DEMO_OUT)/cache --out $(DEMO_OUT)/model --overwrite
	$(BIN)/classify predict --model $(DEMO_OUT)/model --cache $(DEMO_OUT)/cache --ids $(DEMO_DATA)/test.parquet \
		--out $(DEMO_OUT)/predictions.parquet --overwrite
	$(BIN)/classify evaluate --predictions $(DEMO_OUT)/predictions.parquet --labels $(DEMO_DATA)/test_labels.parquet
	@echo "demo: predictions for $(DEMO_DATA)/test.parquet are in $(DEMO_OUT)/predictions.parquet"

# Every bench, then the README's and docs/' tables re-rendered from bench/results (bench/render_docs.py).
bench: bench-runtime bench-embed bench-heads bench-service bench-page bench-service-baseline
	$(BIN)/python bench/render_docs.py

# Only re-render the tables (after any single bench, or `make finetune` / `make notebook`).
docs: setup
	$(BIN)/python bench/render_docs.py

bench-embed: setup
	$(BIN)/python bench/embed_bench.py

bench-heads: setup
	$(BIN)/python bench/heads_bench.py

bench-service: setup
	$(BIN)/python bench/service_bench.py

# This service beside the commit issue 24 measured (a git worktree), c=1 and c=8 in alternating rounds.
bench-service-baseline: setup
	$(BIN)/python bench/service_baseline.py

# Every encoder runtime x precision on the same images, interleaved (bench/results/runtime.json).
bench-runtime: setup
	$(BIN)/python bench/runtime_bench.py

# The encoder's int8 copy, calibrated on a seeded sample of the stand-in train split (for --precision int8).
calibrate: setup
	$(BIN)/embed --calibrate $(CLOTHING)/images.zip --ids $(CLOTHING)/data.parquet

# Local vs Ray engine on the stand-in images, appends to and streaming predict over a 200,000-row cache.
bench-scale: setup
	$(BIN)/python bench/scale_bench.py --images $(CLOTHING)/images.zip

# Every photo format embeds like its JPEG; what recognising a file by content and the sRGB conversion cost.
bench-formats: setup
	$(BIN)/python bench/formats_bench.py --images $(CLOTHING)/images.zip

# The seller page in headless Chromium: choosing a photo -> its card shown, 50 times.
bench-page: setup
	$(BIN)/python bench/page_bench.py

# The README's picture of the page (docs/page.png), made by the browser tests' own code.
page-screenshot: setup
	VINTED_TAGGER_CLOTHING=$(CLOTHING) VINTED_TAGGER_PAGE_SCREENSHOT=docs/page.png \
		$(BIN)/python -m pytest -q tests/test_page.py -k readme_screenshot

# Out-of-fold scores of embedding variants on the train split: the evidence for the committed layout.
bench-variants: setup
	$(BIN)/python bench/embedding_variants.py

notebook: setup
	$(BIN)/python -m jupyter nbconvert --to notebook --execute --inplace notebook/vinted_tagger.ipynb

# Re-train the committed default model (artifacts/model) on the stand-in train split.
model: setup
	$(BIN)/embed $(CLOTHING)/images.zip --out $(CLOTHING_CACHE) --quiet
	$(BIN)/classify train --data $(CLOTHING)/data.parquet --cache $(CLOTHING_CACHE) --out artifacts/model --overwrite

# The deliverable: predictions.parquet (committed) for the stand-in test.parquet from the committed model.
# Embeds only the test images the cache lacks; re-run it after `make model`.
predictions: setup
	$(BIN)/embed $(CLOTHING)/images.zip --out $(CLOTHING_CACHE) --ids $(CLOTHING)/test.parquet --quiet
	$(BIN)/classify predict --model artifacts/model --cache $(CLOTHING_CACHE) --ids $(CLOTHING)/test.parquet --out predictions.parquet --overwrite

# Fine-tune EfficientNet-Lite2 on the stand-in train split (python -m training = finetune-encoder), one variant
# after the other, then compare them with the ImageNet encoder and the committed blocks 5-6 baseline under one
# heads protocol, WiSE-FT included (bench/results/finetune.json). Each variant trains until its held-out score is
# flat for 2 epochs (at most 8: the cosine schedule's length), checkpointing every epoch: a stopped `make finetune`
# continues where it stopped, and finished variants are skipped. OMP_WAIT_POLICY=PASSIVE: on a shared CPU,
# spinning OpenMP threads burn the cores the other thread waits for.
# The committed table's trained variant; the bench adds the committed blocks 5-6 baseline and WiSE-FT of the best
# trained one. More variants of the same recipe (about an hour each on 2 cores): LP-FT,
# FINETUNE_VARIANTS+=lpft-blocks3-aug:--freeze=2,--probe-epochs=1, or the whole network, whole-aug:--freeze=-1.
FINETUNE_VARIANTS ?= blocks3-aug:--freeze=2
FINETUNE_EPOCHS ?= 8
finetune: FINETUNE_STARTED := $(shell date +%s)
finetune: setup
	for variant in $(FINETUNE_VARIANTS); do \
		OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m training --data $(CLOTHING)/data.parquet --images $(CLOTHING)/images.zip \
			--out $(FINETUNE_RUNS)/$${variant%%:*} --epochs $(FINETUNE_EPOCHS) $$(echo $${variant#*:} | tr ',' ' ') \
			|| exit 1; \
	done
	$(BIN)/python bench/finetune_bench.py --runs $(FINETUNE_RUNS) --data $(CLOTHING) --frozen-cache $(FROZEN_CACHE) \
		--started $(FINETUNE_STARTED)

# Adopt the encoder bench/results/finetune.json adopted (training/adopt.py): its fp16 weights, ONNX graph and
# calibrated int8 copy into artifacts/encoders/, and it becomes the default encoder; refuses (exit 2) when the
# bench adopted nothing or the weights are not the file it scored. Then: make model, predictions, notebook, bench.
# ADOPT_ARGS: e.g. --sha256 <checksum> for a result written before the bench recorded encoder.weights_sha256.
adopt: setup
	$(BIN)/python -m training.adopt --images $(CLOTHING)/images.zip --ids $(CLOTHING)/data.parquet $(ADOPT_ARGS)

serve: setup
	$(BIN)/vinted-serve

clean:
	rm -rf $(DEMO_DATA) $(DEMO_OUT) .pytest_cache
