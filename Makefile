# Python 3.13 is the Lambda runtime; fall back to 3.12 where 3.13 is absent. Each candidate must
# really run (a pyenv shim for a version that is not selected exists but fails).
PYTHON ?= $(shell for p in $(HOME)/.pyenv/versions/3.13*/bin/python python3.13 $(HOME)/.pyenv/versions/3.12*/bin/python python3.12; do $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# AWS SAM CLI in its own venv: in the project venv it would downgrade boto3, pydantic and click.
SAM_VENV := .sam-venv
SAM_STAMP := $(SAM_VENV)/.installed

# Pinned dependencies (with hashes), made by uv from the declared ones: requirements.lock (project + dev,
# any platform, for `make install`), and for the AWS pieces (python3.13, arm64): the layer, the listener
# image, the interactions function. `make lock` after changing pyproject.toml or an *.in/requirements.txt.
UV_VENV := .uv-venv
LOCK_ARM := --python-version 3.13 --python-platform aarch64-manylinux2014 --only-binary :all:
# The single-host image (Dockerfile: `cdp serve`): python3.13 on linux/amd64.
LOCK_IMAGE := --python-version 3.13 --python-platform x86_64-manylinux2014 --only-binary :all:
UV_COMPILE = $(UV_VENV)/bin/uv pip compile --quiet --generate-hashes --custom-compile-command "make lock"

# make bench BENCH_ARGS="--quick stream_bench": some benchmarks, options of bench/run.py
.PHONY: install sam run test lint bench clean lock mutations rehearse soak

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "Python 3.13 (or 3.12) not found; set PYTHON=/path/to/python3.13"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(UV_VENV)/bin/uv:
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet 'uv>=0.5'

lock: $(UV_VENV)/bin/uv
	$(UV_COMPILE) pyproject.toml --extra dev --universal --python-version 3.12 -o requirements.lock
	$(UV_COMPILE) layers/common/requirements.txt $(LOCK_ARM) -o layers/common/requirements.lock
	$(UV_COMPILE) pyproject.toml $(LOCK_ARM) -o listener/requirements.lock
	$(UV_COMPILE) pyproject.toml $(LOCK_IMAGE) -o requirements-image.lock
	$(UV_COMPILE) functions/interactions/requirements.in $(LOCK_ARM) -o functions/interactions/requirements.txt

run: install
	$(BIN)/cdp serve

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet 'aws-sam-cli>=1.120'
	touch $(SAM_STAMP)

sam: $(SAM_STAMP)

test: install sam
	$(BIN)/python -m pytest -n 2 -q -p no:cacheprovider

# Deploy rehearsal without AWS (docs/aws.md): sam validate --lint + sam build, the SAM transform to plain
# CloudFormation, built handlers imported, env/resources/timeouts checked, cfn-lint, IAM conformance.
# The same tests run in `make test`.
rehearse: install sam
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/aws/test_template_sam.py tests/aws/test_rehearsal.py \
		tests/aws/test_iam_conformance.py

# the longer runs: fault injection with 1,000 conversations (tests/faults, CDP_SOAK=1)
soak: install
	CDP_SOAK=1 $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/faults/test_fault_run.py
	# load and fuzz: 500 concurrent conversations, the fuzzers with more examples, then a 20k-request
	# soak of one `cdp serve` (RSS, descriptors, tasks sampled; prints a table)
	CDP_LOAD_N=500 CDP_FUZZ_EXAMPLES=150 CDP_FUZZ_BODY_EXAMPLES=400 $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/load tests/fuzz
	$(BIN)/python bench/soak.py --requests 20000

lint: install
	$(BIN)/ruff check layers functions listener tests bench
	$(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Each security defence removed in turn: its test must fail (docs/security.md).
mutations: install
	$(BIN)/python tests/support/security_mutations.py

clean:
	rm -rf $(VENV) $(SAM_VENV) $(UV_VENV) .aws-sam .pytest_cache
