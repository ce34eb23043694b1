# Entry points: `make demo` (the BCCD distillation main job) and `make test`.
# Both first run tools/setup_env.sh, which returns within seconds once the environment exists.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
BCCD_ANNOTATIONS := data/bccd/annotations

.PHONY: env data demo test lint format teacher bench bench-optim sweep

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

# BCCD temperature sweep: baseline YOLOv5-n and distilled students at T = 1 2 4 8 16, seeds 0
# and 1, plus the teacher evaluated on the same validation set. The two seeds train side by side,
# one thread each: on 2 cores, two 1-thread YOLOv5-n trainings each ran at about the speed of one
# 2-thread training (0.7-1.0 s per iteration). Rerunning skips finished runs and resumes
# interrupted ones. See docs/temperature_sweep.md for the recorded run and its duration.
SWEEP_DIR ?= work_dirs/bccd_temperature_sweep
SWEEP_ARGS = configs/yolov5/bccd/kd_yolov5_s-to-n_320_20e_bccd.py \
	--baseline-config configs/yolov5/bccd/yolov5_n_320_20e_bccd.py \
	--temperatures 1 2 4 8 16 --work-dir $(SWEEP_DIR)
sweep: data
	OMP_NUM_THREADS=1 $(PYTHON) tools/sweep_temperature.py $(SWEEP_ARGS) --seeds 0 --eval-teacher & \
	first=$$!; \
	OMP_NUM_THREADS=1 $(PYTHON) tools/sweep_temperature.py $(SWEEP_ARGS) --seeds 1; \
	second=$$?; wait $$first && test $$second -eq 0
	$(PYTHON) tools/sweep_temperature.py $(SWEEP_ARGS) --seeds 0 1 --eval-teacher --collect-only
	$(PYTHON) tools/plot_curves.py $(SWEEP_DIR)/baseline_seed0 $(SWEEP_DIR)/kd_t*_seed0 \
		--out-dir $(SWEEP_DIR)/curves

# MultistepSGD (alpha 0.25 and 0.5) against torch.optim.SGD on the BCCD YOLOv5-n baseline, seeds
# 0 1 2. See docs/optimizer_benchmark.md for the recorded run.
OPTIM_DIR ?= work_dirs/bccd_optimizer_benchmark
bench-optim: data
	$(PYTHON) tools/benchmark_optimizer.py configs/yolov5/bccd/yolov5_n_320_20e_bccd.py \
		--alphas 0.25 0.5 --seeds 0 1 2 --work-dir $(OPTIM_DIR)
