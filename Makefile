# masqd — the targets a developer and CI use. Every target installs what it needs.
PYTHON ?= python3
NETNS  ?= masqd-quickstart

.PHONY: deps test lint fmt proto proto-check run bench cni-bin image manifests clean

deps:
	@scripts/install-deps.sh

test: deps
	$(PYTHON) -m pytest -q

# ruff, mypy --strict, and the import contracts of pyproject.toml's [tool.importlinter].
lint: deps
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
	$(PYTHON) -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'

fmt:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

# The generated gRPC code is committed; tests/unit/test_proto.py fails when it is stale.
proto:
	$(PYTHON) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. \
		protos/masqd/api/v1/control.proto

# Runs masqd with the default config in a network namespace of its own, shows its rules, and
# removes the namespace on exit (Ctrl-C).
run: deps
	@scripts/quickstart.sh $(NETNS)

bench: deps
	$(PYTHON) -m bench

cni-bin: deps
	@scripts/build-cni.sh

image: deps
	@scripts/build-image.sh

manifests: deps
	@$(PYTHON) scripts/render_manifests.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
