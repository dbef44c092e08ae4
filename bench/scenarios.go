package main

import (
	"fmt"
	"strconv"
	"time"
)

// figure is one number a scenario reports, a row of the table.
type figure struct {
	Key    string `json:"key"` // the client's value name
	Label  string `json:"label"`
	Unit   string `json:"unit"`
	Higher bool   `json:"higher_is_better"`
}

// goal is the target for a scenario; check says whether the
// medians meet it and shows the numbers it compared.
type goal struct {
	text  string
	check func(med map[mode]map[string]float64) (bool, string)
}

type scenario struct {
	name    string
	title   string
	modes   []mode
	figures []figure
	goal    *goal
	reps    func(k knobs) int
	// measure runs one measurement in mode m.
	measure func(h *harness, m mode) (map[string]float64, error)
}

// clientArgs are the client flags for a scenario, the same in every mode
// and in the profile mode.
func clientArgs(name string, info serverInfo, k knobs) []string {
	dur := func(d time.Duration) string { return d.String() }
	switch name {
	case "bulk-connect":
		return []string{"-scenario", name, "-target", info.HTTP, "-bytes", strconv.FormatInt(k.BulkBytes, 10)}
	case "bulk-forward":
		return []string{"-scenario", name, "-url", "http://" + info.HTTP + "/bytes", "-bytes", strconv.FormatInt(k.BulkBytes, 10)}
	case "ws-rtt":
		return []string{"-scenario", name, "-url", "ws://" + info.HTTP + "/echo", "-msg", "1024",
			"-duration", dur(k.Duration), "-warmup", dur(k.Warmup)}
	case "ws-throughput":
		return []string{"-scenario", name, "-url", "ws://" + info.HTTP + "/echo", "-msg", strconv.Itoa(64 << 10),
			"-bytes", strconv.FormatInt(k.WSBytes, 10)}
	case "small-forward":
		return []string{"-scenario", "small", "-url", "http://" + info.HTTP + "/small", "-conns", strconv.Itoa(k.Conns),
			"-duration", dur(k.Duration), "-warmup", dur(k.Warmup)}
	case "small-tls":
		_, port, _ := cutPort(info.HTTPS)
		return []string{"-scenario", "small", "-url", "https://" + benchHost + ":" + port + "/small",
			"-conns", strconv.Itoa(k.Conns), "-duration", dur(k.Duration), "-warmup", dur(k.Warmup), "-ca", info.CertFile}
	case "memory":
		return []string{"-scenario", "ws-hold", "-url", "ws://" + info.HTTP + "/echo", "-conns", strconv.Itoa(k.IdleConns)}
	case "scale":
		return []string{"-scenario", "scale", "-target", info.Echo, "-conns", strconv.Itoa(k.Tunnels)}
	}
	panic("no client for scenario " + name)
}

func cutPort(addr string) (host, port string, ok bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], true
		}
	}
	return addr, "", false
}

func repsOf(k knobs) int { return k.Reps }
func once(knobs) int     { return 1 }

// measureClient is the measure of a scenario that is just a client run.
func measureClient(name string, tls bool) func(h *harness, m mode) (map[string]float64, error) {
	return func(h *harness, m mode) (map[string]float64, error) {
		return h.runClient(m, runSpec{tls: tls, args: clientArgs(name, h.info, h.k)})
	}
}

// atLeast is the goal that osandbox's key is at least f times base's.
func atLeast(key string, f float64, base mode) *goal {
	return &goal{
		text: fmt.Sprintf(">= %.2fx %s", f, base),
		check: func(med map[mode]map[string]float64) (bool, string) {
			o, b := med[osb][key], med[base][key]
			return b > 0 && o >= f*b, fmt.Sprintf("%.3gx %s", o/b, base)
		},
	}
}

var (
	mibps     = figure{Key: "mib_per_s", Label: "throughput", Unit: "MiB/s", Higher: true}
	reqps     = figure{Key: "req_per_s", Label: "req/s", Unit: "req/s", Higher: true}
	p50ms     = figure{Key: "p50_ms", Label: "p50", Unit: "ms"}
	p99ms     = figure{Key: "p99_ms", Label: "p99", Unit: "ms"}
	errorsFig = figure{Key: "errors", Label: "tunnels failed or not tried", Unit: "count"}
)

// scenarios are issue 7's, in its order.
var scenarios = []scenario{
	{
		name: "bulk-connect", title: "bulk download over CONNECT", modes: allModes,
		figures: []figure{mibps}, goal: atLeast("mib_per_s", 0.9, bare),
		reps: repsOf, measure: measureClient("bulk-connect", false),
	},
	{
		name: "bulk-forward", title: "bulk download, forward-proxy GET", modes: allModes,
		figures: []figure{mibps},
		reps:    repsOf, measure: measureClient("bulk-forward", false),
	},
	{
		name: "ws-rtt", title: "WebSocket echo, 1 KiB, one connection", modes: allModes,
		figures: []figure{{Key: "rt_per_s", Label: "round trips/s", Unit: "rt/s", Higher: true},
			{Key: "p50_us", Label: "p50", Unit: "us"}},
		goal: atLeast("rt_per_s", 0.85, bare),
		reps: repsOf, measure: measureClient("ws-rtt", false),
	},
	{
		name: "ws-throughput", title: "WebSocket echo, 64 KiB messages", modes: allModes,
		figures: []figure{mibps}, goal: atLeast("mib_per_s", 0.9, bare),
		reps: repsOf, measure: measureClient("ws-throughput", false),
	},
	{
		name: "small-forward", title: "small requests, 64 clients, forward proxy", modes: allModes,
		figures: []figure{reqps, p50ms, p99ms}, goal: atLeast("req_per_s", 0.5, direct),
		reps: repsOf, measure: measureClient("small-forward", false),
	},
	{
		name: "small-tls", title: "small requests, 64 clients, intercepted TLS", modes: allModes,
		figures: []figure{reqps, p50ms, p99ms}, goal: atLeast("req_per_s", 0.5, direct),
		reps: repsOf, measure: measureClient("small-tls", true),
	},
	{
		name: "startup", title: "start-up: run -- /bin/true (median)", modes: []mode{direct, osb},
		figures: []figure{{Key: "ms", Label: "wall time", Unit: "ms"}},
		goal: &goal{text: "overhead <= 25 ms", check: func(med map[mode]map[string]float64) (bool, string) {
			d := med[osb]["ms"] - med[direct]["ms"]
			return d <= 25, fmt.Sprintf("+%.1f ms", d)
		}},
		reps: func(k knobs) int { return k.StartRuns }, measure: measureStartup,
	},
	{
		name: "memory", title: "memory: idle upgraded WebSockets", modes: []mode{bare, osb},
		figures: []figure{{Key: "per_conn_kib", Label: "RSS per connection", Unit: "KiB"},
			{Key: "fds_per_conn", Label: "fds per connection", Unit: "fds"}},
		goal: &goal{text: "<= 48 KiB/conn", check: func(med map[mode]map[string]float64) (bool, string) {
			v := med[osb]["per_conn_kib"]
			return v > 0 && v <= 48, fmt.Sprintf("%.1f KiB", v)
		}},
		reps: once, measure: measureMemory,
	},
	{
		name: "scale", title: "scale: concurrent CONNECT tunnels, all echoing", modes: allModes,
		figures: []figure{errorsFig, {Key: "open_s", Label: "open all", Unit: "s"},
			{Key: "echo_s", Label: "echo on all", Unit: "s"}, {Key: "fds", Label: "proxy fds at peak", Unit: "fds"}},
		goal: &goal{text: "0 errors", check: func(med map[mode]map[string]float64) (bool, string) {
			o := med[osb]
			return o["errors"] == 0 && o["open"] == o["tunnels"], fmt.Sprintf("%.0f errors, %.0f/%.0f open", o["errors"], o["open"], o["tunnels"])
		}},
		reps: once, measure: measureScale,
	},
}

// measureStartup times one `osandbox run -- /bin/true`, or /bin/true.
func measureStartup(h *harness, m mode) (map[string]float64, error) {
	argv := []string{"/bin/true"}
	if m == osb {
		argv = []string{h.osandbox, "run", "--", "/bin/true"}
	}
	d, err := timeRun(argv...)
	return map[string]float64{"ms": float64(d.Microseconds()) / 1000}, err
}

// settle is how long the proxy gets to finish its work before its memory
// is read.
const settle = time.Second

// measureMemory reads the proxy's RSS before and while the client holds
// its idle WebSockets.
func measureMemory(h *harness, m mode) (map[string]float64, error) {
	return h.runClient(m, runSpec{args: clientArgs("memory", h.info, h.k), hook: func(line string, pid int, vals map[string]float64) {
		time.Sleep(settle)
		rss, err := procKiB(pid, "VmRSS")
		if err != nil {
			return
		}
		fds, pipes := procFDs(pid)
		switch line {
		case lineReady:
			vals["rss_base_kib"], vals["fds_base"] = float64(rss), float64(fds)
		case lineHeld:
			n := float64(h.k.IdleConns)
			vals["rss_held_kib"], vals["fds_held"], vals["pipes_held"] = float64(rss), float64(fds), float64(pipes)
			vals["per_conn_kib"] = (vals["rss_held_kib"] - vals["rss_base_kib"]) / n
			vals["fds_per_conn"] = (vals["fds_held"] - vals["fds_base"]) / n
		}
	}})
}

// scaleLowFD is the soft RLIMIT_NOFILE osandbox starts with in the scale
// scenario: far too low for it, so only raising its own limit passes.
const scaleLowFD = 1024

// measureScale runs the tunnels and reads the proxy's descriptors and
// limits at the peak.
func measureScale(h *harness, m mode) (map[string]float64, error) {
	spec := runSpec{args: clientArgs("scale", h.info, h.k), hook: func(line string, pid int, vals map[string]float64) {
		if line != lineHeld || pid == 0 {
			return
		}
		fds, pipes := procFDs(pid)
		vals["fds"], vals["pipes"] = float64(fds), float64(pipes)
		if rss, err := procKiB(pid, "VmRSS"); err == nil {
			vals["rss_kib"] = float64(rss)
		}
		soft, hard := procNoFile(pid)
		vals["nofile_soft"], _ = strconv.ParseFloat(soft, 64)
		vals["nofile_hard"], _ = strconv.ParseFloat(hard, 64)
	}}
	if m == osb {
		spec.lowFD = scaleLowFD
	}
	vals, err := h.runClient(m, spec)
	if m == osb {
		vals["nofile_started"] = scaleLowFD
	}
	return vals, err
}
