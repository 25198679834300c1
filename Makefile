# The two commands: `make demo` (quickstart end to end) and `make test` (the test suite); `make test-fast` is the
# development loop.
# Both create .venv and install the project into it when missing.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Use the bundled MedMNIST files when this checkout sits beside them; otherwise ~/.medmnist (downloaded on demand).
MEDMNIST_ROOT ?= $(if $(wildcard ../shared/data/medmnist/*.npz),$(abspath ../shared/data/medmnist),)
export MEDMNIST_ROOT

.PHONY: demo demo-vit shrink-demo robustness-demo imagecorruptions-env test test-fast lint install

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev,bench,app,shrink]"
	touch $@

# --quiet: a failed run ends with the script's own one-sentence error, not accelerate's CalledProcessError traceback.
# --num_cpu_threads_per_process: accelerate otherwise sets OMP_NUM_THREADS=1, and on the CPU the quickstart ran on one
# core of two (its teacher trained in 240 s instead of 150 s).
LAUNCH := $(VENV)/bin/accelerate launch --quiet --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	--num_cpu_threads_per_process $(shell nproc)

QUICKSTART := runs/quickstart

# The demos own their runs/ folders, so a second `make demo` retrains them (--overwrite_output_dir true); a fresh
# finetune or distill into a folder holding a trained model is otherwise refused.
DEMO_RUN := --overwrite_output_dir true

# Quickstart: fine-tune the teacher, distill it into a smaller student that also matches the teacher's Grad-CAM
# (and train that student alone, and with plain distillation), then write the evaluation report of all four into
# report/ and into the student's model card.
demo: $(VENV)/.installed
	$(LAUNCH) scripts/finetune.py configs/quickstart.yaml $(DEMO_RUN)
	$(LAUNCH) scripts/distill.py configs/quickstart_distill.yaml $(DEMO_RUN)
	$(LAUNCH) scripts/distill.py configs/quickstart_distill.yaml --explanation_weight 0 --train_baseline false $(DEMO_RUN) \
		--output_dir $(QUICKSTART)/student-plain-distillation
	$(PYTHON) scripts/report.py --dataset_name pneumoniamnist --split test --output_dir report --latency_repeats 100 --insertion_start removed \
		--models $(QUICKSTART)/teacher $(QUICKSTART)/student $(QUICKSTART)/student-plain-distillation \
		$(QUICKSTART)/student-no-teacher --model_card $(QUICKSTART)/student

VIT_QUICKSTART := runs/vit-quickstart
# The methods the ViT report scores: Grad-CAM on the patch tokens (the seeds' story), LayerCAM, attention rollout
# (class-agnostic) and the class-specific attention methods, gradient rollout and LeGrad.
VIT_METHODS := gradcam,layercam,attention_rollout,gradient_rollout,legrad

# ViT quickstart: fine-tune a ViT teacher on PneumoniaMNIST, distill it into a DeiT student with its distillation
# token whose LeGrad map also learns the teacher's, then the report of both into report-vit/ and the student's model
# card. To keep the demo within its 10 minutes on a 2-core CPU it trains no student alone (README, "The ViT
# quickstart", has the student alone over three seeds and the command), and its report leaves out the corruptions
# (robustness-demo shows them on the quickstart's models) and explains 128 test images, the paired test's sample
# (256 by default). With the student alone and 256 images it took 591 s, 667 s and (128 images) 612 s: this machine's
# speed varies by about 15% from run to run.
demo-vit: $(VENV)/.installed
	$(LAUNCH) scripts/finetune.py configs/vit_quickstart.yaml $(DEMO_RUN)
	$(LAUNCH) scripts/distill.py configs/vit_quickstart_distill.yaml --train_baseline false $(DEMO_RUN)
	$(PYTHON) scripts/report.py --dataset_name pneumoniamnist --split test --output_dir report-vit --latency_repeats 100 \
		--insertion_start removed --methods $(VIT_METHODS) --corruptions none --explain_images 128 --models \
		$(VIT_QUICKSTART)/teacher $(VIT_QUICKSTART)/student --model_card $(VIT_QUICKSTART)/student

# After `make demo`: int8 (weights; weights and activations) and 50%-pruned copies of the quickstart teacher, then the
# evaluation report of original, distilled student, int8 and pruned side by side into report-shrink/.
shrink-demo: $(VENV)/.installed
	$(PYTHON) scripts/shrink.py $(QUICKSTART)/teacher --shrink_method int8 --output_dir $(QUICKSTART)/teacher-int8
	$(PYTHON) scripts/shrink.py $(QUICKSTART)/teacher --shrink_method int8 --int8_activations static \
		--dataset_name pneumoniamnist --output_dir $(QUICKSTART)/teacher-int8-w8a8
	$(PYTHON) scripts/shrink.py $(QUICKSTART)/teacher --shrink_method prune --ratio 0.5 --output_dir $(QUICKSTART)/teacher-pruned \
		--recover_epochs 2 --dataset_name pneumoniamnist
	$(PYTHON) scripts/report.py --dataset_name pneumoniamnist --split test --output_dir report-shrink --latency_repeats 20 \
		--insertion_start removed --models $(QUICKSTART)/teacher $(QUICKSTART)/student $(QUICKSTART)/teacher-int8 \
		$(QUICKSTART)/teacher-int8-w8a8 $(QUICKSTART)/teacher-pruned

# After `make demo` and `make shrink-demo`: the teacher, the three students, the int8 and the pruned copies side by side
# under MedMNIST-C's corruptions for PneumoniaMNIST on the whole test split (MedMNIST-C's protocol; the demo's reports
# use a 128-image sample), into report-robustness/.
robustness-demo: $(VENV)/.installed
	$(PYTHON) scripts/report.py --dataset_name pneumoniamnist --split test --output_dir report-robustness --latency_repeats 20 \
		--insertion_start removed --corruption_images all --models $(QUICKSTART)/teacher $(QUICKSTART)/student \
		$(QUICKSTART)/student-plain-distillation $(QUICKSTART)/student-no-teacher $(QUICKSTART)/teacher-int8 \
		$(QUICKSTART)/teacher-int8-w8a8 $(QUICKSTART)/teacher-pruned

# imagecorruptions, which `scripts/benchmark.py corruptions` times against, in an environment of its own: it needs
# opencv-python, which clashes with the opencv-python-headless in $(VENV), and its last release (1.1.2, 2020) needs
# setuptools' pkg_resources and numpy < 2.
IC_VENV := .venv-imagecorruptions
imagecorruptions-env:
	test -x $(IC_VENV)/bin/python || python3 -m venv $(IC_VENV)
	$(IC_VENV)/bin/pip install --quiet "imagecorruptions==1.1.2" "numpy<2" "setuptools<70" "scipy<1.12" "scikit-image<0.21"

# One pytest worker per core (pytest-xdist), each test file on one worker (its module fixtures built once), each worker
# on one thread: the tests' models are tiny, and two OpenMP threads per worker on a 2-core machine would fight.
TESTS := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n auto --dist loadfile

test: $(VENV)/.installed
	$(TESTS)

# The development loop: every test but the end-to-end runs in subprocesses (marked slow), which `make test` adds.
test-fast: $(VENV)/.installed
	$(TESTS) -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
