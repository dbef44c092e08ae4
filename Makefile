# osandbox: make build | test | e2e | lint | fmt | bench | fuzz
GO      ?= go
BIN     ?= osandbox
PKGS    := ./...

.PHONY: build test unit e2e lint fmt bench fuzz install clean

# A static binary: no libc to load at start-up, runs on any distribution.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) .

install:
	CGO_ENABLED=0 $(GO) install .

# The test command: unit and proxy tests, then the end-to-end suite on the
# built binary (as root it also runs every case as the user nobody).
test: lint
	$(GO) test -race -count=1 $(PKGS)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(GO) test -count=1 -v ./e2e/

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w .

# Micro-benchmarks beside the packages, then the harness (bench/): every
# scenario of issue 7 direct, through a bare relay and inside osandbox,
# interleaved; prints a table and writes bench/results.json. BENCH_QUICK=1
# for a short run; other knobs in bench/main.go.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(if $(BENCH_QUICK),-benchtime=100ms) ./policies/ ./audit/ ./proxy/
	$(GO) build -o bin/osbench ./bench
	./bin/osbench run -osandbox ./$(BIN) -out bench/results.json

# Every fuzz target in turn for FUZZTIME each (make fuzz FUZZTIME=5m before
# a release); a crasher lands in the package's testdata/fuzz, to commit as a
# seed. make test runs the seeds.
FUZZTIME ?= 30s
fuzz:
	@for pkg in ./policies/ ./proxy/ ./audit/; do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -f $(BIN)
