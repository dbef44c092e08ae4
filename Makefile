# osandbox: make build | test | e2e | lint | fmt | bench
GO      ?= go
BIN     ?= osandbox
PKGS    := ./...

.PHONY: build test unit e2e lint fmt bench install clean

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

clean:
	rm -f $(BIN)
