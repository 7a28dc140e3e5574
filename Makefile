# Common tasks. `make demo` and `make test` are the two commands of the README.

CARGO ?= cargo
DATA_DIR ?= var/demo
LISTEN ?= 127.0.0.1:8080

.PHONY: demo build models index-demo test lint openapi clean

## Build, fetch the models, index the demo catalogue and serve it on $(LISTEN).
demo: build models index-demo
	./target/release/attnrec serve --data-dir $(DATA_DIR) --listen $(LISTEN)

build:
	$(CARGO) build --release --locked

# Both models: all-MiniLM-L6-v2 serves the demo, and the tests load both.
models:
	scripts/fetch-models.sh all

index-demo: build models
	@if [ -f $(DATA_DIR)/manifest.json ]; then echo "$(DATA_DIR) is already indexed (make clean to rebuild)"; \
	else ./target/release/attnrec index --catalog data/goodbooks-10k.csv --data-dir $(DATA_DIR); fi

## Fetch the models, then run every test (unit, integration, real models), the storage tests
## against both SQLite and a throwaway PostgreSQL server on 127.0.0.1.
test: models
	scripts/with-postgres.sh $(CARGO) test --locked

# Writes to a temporary file first: redirecting straight into openapi.yaml would empty it
# before cargo compiles it into the binary.
openapi:
	$(CARGO) run --quiet -- openapi > openapi.yaml.partial
	mv openapi.yaml.partial openapi.yaml
	$(CARGO) build --quiet

clean:
	rm -rf $(DATA_DIR)
