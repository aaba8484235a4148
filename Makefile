# The README's two commands: `make demo` and `make test`. Both set up what they need.
VENV ?= .venv
PYTHON ?= python3
SHARED_CT ?= ../shared/data/ct
DATA ?= $(SHARED_CT)/lung-pet-ct-dx-A0001
OUT ?= demo_out
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup setup-test system-deps demo demo-real test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

# The package alone: what `make demo` and the other commands need.
$(STAMP): setup.py | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e .
	touch $(STAMP)

# The package with the test extra (Beam, JAX, PyRadiomics, Selenium, BM3D, pytest...): `make test`.
$(TEST_STAMP): setup.py $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

setup: $(STAMP)
setup-test: $(TEST_STAMP)

# dcm2niix and dciodvfy are the references the reader and writer are checked against;
# Chromium and its driver run the reader-study page in the browser tests.
system-deps:
	@if command -v dcm2niix >/dev/null && command -v dciodvfy >/dev/null \
	    && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "dcm2niix, dciodvfy, chromium and chromedriver present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    dcm2niix dicom3tools chromium chromium-driver >/dev/null; \
	else \
	  echo "note: install dcm2niix dicom3tools chromium chromium-driver (Debian/Ubuntu: sudo apt-get install ...);"; \
	  echo "      the tests that need them are skipped without them"; \
	fi

# The main job on the embedded default: a synthetic chest CT cohort -> dataset -> three trained
# tasks -> SavedModels -> evaluation report, within about 15 minutes on 2 cores.
demo: setup
	$(VENV)/bin/cgan-ct-demo --output_dir $(OUT)

# Reads a real CT series, writes de-identified copies, converts it and draws a montage of its blocks.
demo-real: setup
	@if [ ! -e "$(DATA)" ]; then echo "no CT at $(DATA): run 'make demo-real DATA=/path/to/dicom_folder_or_volume.nii.gz'"; exit 1; fi
	rm -rf $(OUT)-real && mkdir -p $(OUT)-real
	$(VENV)/bin/cgan-ct-info "$(DATA)" --write_dicom $(OUT)-real/dicom --write_nifti $(OUT)-real/volume.nii.gz
	$(VENV)/bin/cgan-ct-convert --input "$(DATA)" --output_dir $(OUT)-real/dataset
	$(VENV)/bin/cgan-ct-inspect --dataset_dir $(OUT)-real/dataset --montage $(OUT)-real/blocks.png

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest workers, whole files each (module fixtures such as a trained tiny cascade are built once):
# the suite is subprocess- and I/O-bound enough that two workers on two cores finish sooner (docs/benchmarks.md,
# "Test suite time"). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: system-deps setup-test lint
	$(VENV)/bin/pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: setup
	$(VENV)/bin/python benchmarks/cli_startup_bench.py
	$(VENV)/bin/python benchmarks/read_volume_bench.py --series_dir $(DATA)
	$(VENV)/bin/python benchmarks/convert_bench.py --series_dir $(DATA)
	$(VENV)/bin/python benchmarks/pipeline_bench.py
	$(VENV)/bin/python benchmarks/model_bench.py --presets cpu,paper --batch 4 --precisions float32,auto
	$(VENV)/bin/python benchmarks/step_profile.py --preset cpu --precisions float32,auto

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info .pytest_cache
