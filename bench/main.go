// Command osbench is osandbox's benchmark harness; `make bench` runs it.
//
// It measures every scenario of issue 7 three ways, interleaved in one
// run: direct (client to server), through a bare io.Copy relay of its own
// (the limit for any userspace proxy; see relay.go for exactly what it
// does), and with the client inside `osandbox run`. The client is this
// binary in client mode, so the same code runs in all three. It prints a
// table with the ratios and writes bench/results.json.
//
// It is not a test and has no _test files: `go test ./...` builds it and
// runs nothing. The go test micro-benchmarks live beside their packages.
//
//	osbench [run] [-osandbox PATH] [-out FILE]   the benchmark (the other modes are its parts)
//	osbench profile -scenario S -cpuprofile F     the proxy in this process, under pprof
//	osbench serve | relay | client | lowfd        started by the two above
//
// Knobs (environment):
//
//	BENCH_QUICK=1          256 MiB bulk, 1 rep, short runs, 1,000 tunnels: for development
//	BENCH_SCENARIOS=a,b    only these (bulk-connect bulk-forward ws-rtt ws-throughput
//	                       small-forward small-tls startup memory scale)
//	BENCH_REPS=N           interleaved repetitions per mode (default 3)
//	BENCH_BYTES=SIZE       bulk download size (default 2G; K, M, G suffixes are binary)
//	BENCH_WS_BYTES=SIZE    WebSocket throughput bytes (default 1G)
//	BENCH_DURATION=D       measured time of ws-rtt and small-* (default 5s)
//	BENCH_IDLE_CONNS=N     idle WebSockets in memory (default 1000)
//	BENCH_TUNNELS=N        tunnels in scale (default 5000)
//	BENCH_STARTUP_RUNS=N   runs per mode in startup (default 20)
//	BENCH_AUDIT=0          run osandbox without --audit-log (default: with one)
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runMain(args)
	case "profile":
		err = profileMain(args)
	case "serve":
		err = serveMain(args)
	case "relay":
		err = relayMain(args)
	case "client":
		err = clientMain(args)
	case "lowfd":
		err = lowFDMain(args)
	default:
		err = fmt.Errorf("unknown command %q (want run, profile, serve, relay, client, lowfd)", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "osbench %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// knobs are the sizes and counts of one run.
type knobs struct {
	Quick     bool          `json:"quick"`
	Reps      int           `json:"reps"`
	BulkBytes int64         `json:"bulk_bytes"`
	WSBytes   int64         `json:"ws_bytes"`
	Duration  time.Duration `json:"duration_ns"`
	Warmup    time.Duration `json:"warmup_ns"`
	Conns     int           `json:"small_conns"`
	IdleConns int           `json:"idle_conns"`
	Tunnels   int           `json:"tunnels"`
	StartRuns int           `json:"startup_runs"`
	Audit     bool          `json:"audit_log"`
	Only      []string      `json:"scenarios,omitempty"`
}

func knobsFromEnv() (knobs, error) {
	k := knobs{Reps: 3, BulkBytes: 2 << 30, WSBytes: 1 << 30, Duration: 5 * time.Second, Warmup: time.Second,
		Conns: 64, IdleConns: 1000, Tunnels: 5000, StartRuns: 20, Audit: true}
	if os.Getenv("BENCH_QUICK") == "1" {
		k.Quick = true
		k.Reps, k.BulkBytes, k.WSBytes = 1, 256<<20, 128<<20
		k.Duration, k.Warmup = 1500*time.Millisecond, 300*time.Millisecond
		k.Tunnels, k.StartRuns = 1000, 10
	}
	var err error
	setInt := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *dst, err = strconv.Atoi(v); err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	setSize := func(name string, dst *int64) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *dst, err = parseSize(v); err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	setInt("BENCH_REPS", &k.Reps)
	setInt("BENCH_IDLE_CONNS", &k.IdleConns)
	setInt("BENCH_TUNNELS", &k.Tunnels)
	setInt("BENCH_STARTUP_RUNS", &k.StartRuns)
	setSize("BENCH_BYTES", &k.BulkBytes)
	setSize("BENCH_WS_BYTES", &k.WSBytes)
	if v := os.Getenv("BENCH_DURATION"); v != "" && err == nil {
		if k.Duration, err = time.ParseDuration(v); err != nil {
			err = fmt.Errorf("BENCH_DURATION: %w", err)
		}
	}
	if os.Getenv("BENCH_AUDIT") == "0" {
		k.Audit = false
	}
	if v := os.Getenv("BENCH_SCENARIOS"); v != "" {
		k.Only = strings.Split(v, ",")
	}
	if err == nil && (k.Reps < 1 || k.IdleConns < 1 || k.Tunnels < 1 || k.StartRuns < 1) {
		err = fmt.Errorf("BENCH_REPS, _IDLE_CONNS, _TUNNELS, _STARTUP_RUNS must be at least 1")
	}
	return k, err
}

// parseSize reads "256M", "2G", "1048576" (suffixes are binary).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
