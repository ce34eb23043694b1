# Entry points: `make demo` (the BCCD distillation main job) and `make test`.
# Both first run tools/setup_env.sh, which returns within seconds once the environment exists.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BCCD_ANNOTATIONS := data/bccd/annotations

.PHONY: env data demo test lint format teacher bench sweep

env:
	bash tools/setup_env.sh

data: env
	$(PYTHON) tools/voc_to_coco.py data/bccd/BCCD --classes RBC WBC Platelets \
		--splits train val test trainval --out-dir $(BCCD_ANNOTATIONS)

demo: data
	$(PYTHON) tools/run_bccd_demo.py

test: data lint
	$(PYTHON) -m pytest tests

lint: env
	$(VENV)/bin/ruff check kd_plugin tools tests configs
	$(VENV)/bin/ruff format --check kd_plugin tools tests

format: env
	$(VENV)/bin/ruff format kd_plugin tools tests

# The shipped BCCD teacher checkpoint was made with this target (about 70 minutes on 2 cores).
teacher: data
	$(PYTHON) tools/train.py configs/yolov5/bccd/yolov5_s_320_30e_bccd.py \
		--work-dir work_dirs/yolov5_s_320_30e_bccd
	$(PYTHON) tools/publish_checkpoint.py work_dirs/yolov5_s_320_30e_bccd \
		checkpoints/bccd/yolov5_s_320_30e_bccd.pth

bench: data
	$(PYTHON) tools/benchmark_distill.py

# BCCD temperature sweep: baseline YOLOv5-n and distilled students at T = 1 2 4 8 16, seeds 0 1,
# plus the teacher evaluated on the same validation set. Rerunning skips finished runs and
# resumes interrupted ones. Estimate: about 4 hours on 2 CPU cores (12 runs of 18-20+ minutes).
SWEEP_DIR ?= work_dirs/bccd_temperature_sweep
sweep: data
	$(PYTHON) tools/sweep_temperature.py configs/yolov5/bccd/kd_yolov5_s-to-n_320_20e_bccd.py \
		--baseline-config configs/yolov5/bccd/yolov5_n_320_20e_bccd.py \
		--temperatures 1 2 4 8 16 --seeds 0 1 --eval-teacher --work-dir $(SWEEP_DIR)
	$(PYTHON) tools/plot_curves.py $(SWEEP_DIR)/baseline_seed0 $(SWEEP_DIR)/kd_t*_seed0 \
		--out-dir $(SWEEP_DIR)/curves
