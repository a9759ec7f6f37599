# The two commands: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench chaos install lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app portal db upgrade
	$(BIN)/flask --app portal seed-demo --if-empty
	$(BIN)/flask --app portal serve --demo --host 127.0.0.1 --port 5000

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# The sync's benchmark: every scenario at full size, or one (`make bench SCENARIO=idle`); BENCH_ARGS adds
# options (`make bench BENCH_ARGS="--profile --size idle_users=1000"`). See bench/__init__.py.
BENCH_DATABASE ?= $(or $(TEST_DATABASE_URL),postgresql+psycopg://postgres@127.0.0.1:5432/test)
bench: $(STAMP)
	$(BIN)/python -m bench $(SCENARIO) --database $(BENCH_DATABASE) --latency-ms 100 $(BENCH_ARGS)

# The long chaos soak: `make chaos SEEDS=1-200 OPS=120` (DATABASE=postgresql+psycopg://... adds a killed
# worker process on PostgreSQL).
SEEDS ?= 1-200
OPS   ?= 120
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.soak --seeds $(SEEDS) --operations $(OPS) $(if $(DATABASE),--database $(DATABASE))

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
