# osandbox: make build | test | e2e | lint | fmt | bench
GO      ?= go
BIN     ?= osandbox
PKGS    := ./...

.PHONY: build test unit e2e lint fmt bench install clean

build:
	$(GO) build -o $(BIN) .

install:
	$(GO) install .

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./policies/ ./audit/ ./proxy/

clean:
	rm -f $(BIN)
