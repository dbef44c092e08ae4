package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// measurement is one run of one scenario in one mode.
type measurement struct {
	Values map[string]float64 `json:"values"`
	Error  string             `json:"error,omitempty"`
}

// outcome is everything one scenario produced.
type outcome struct {
	sc   *scenario
	runs map[mode][]measurement
}

func runMain(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	osandboxPath := fs.String("osandbox", "./osandbox", "the osandbox binary to measure")
	out := fs.String("out", "bench/results.json", "where to write the results")
	_ = fs.Parse(args)
	soft, hard, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	k, err := knobsFromEnv()
	if err != nil {
		return err
	}
	h, err := newHarness(k, *osandboxPath)
	if err != nil {
		return err
	}
	defer h.close()
	m := machineInfo(h.osandbox)
	m.HarnessNoFile = [2]uint64{soft, hard}
	fmt.Fprintf(os.Stderr, "osbench: %s, %d cores, kernel %s, %s; quick=%v reps=%d audit=%v\n",
		m.CPU, m.Cores, m.Kernel, m.Go, k.Quick, k.Reps, k.Audit)

	start := time.Now()
	var outcomes []outcome
	for i := range scenarios {
		sc := &scenarios[i]
		if len(k.Only) > 0 && !slices.Contains(k.Only, sc.name) {
			continue
		}
		outcomes = append(outcomes, runScenario(h, sc))
	}
	m.LoadAvgEnd = loadAvg()
	rep := buildReport(m, k, start, outcomes)
	printTable(os.Stdout, rep)
	if err := writeJSON(*out, rep); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "osbench: wrote %s\n", *out)
	return nil
}

// runScenario measures sc reps times per mode, the modes interleaved and
// their order rotated each rep, so drift on a shared machine hits all
// modes alike.
func runScenario(h *harness, sc *scenario) outcome {
	o := outcome{sc: sc, runs: map[mode][]measurement{}}
	reps := sc.reps(h.k)
	for r := range reps {
		order := slices.Concat(sc.modes[r%len(sc.modes):], sc.modes[:r%len(sc.modes)])
		for _, m := range order {
			vals, err := sc.measure(h, m)
			ms := measurement{Values: vals}
			if err != nil {
				ms.Error = err.Error()
			}
			o.runs[m] = append(o.runs[m], ms)
			fmt.Fprintf(os.Stderr, "  %-14s %-9s rep %d/%d  %s\n", sc.name, m, r+1, reps, brief(sc, ms))
		}
	}
	return o
}

// brief is a progress line: the scenario's figures, or the error.
func brief(sc *scenario, ms measurement) string {
	var parts []string
	for _, f := range sc.figures {
		if v, ok := ms.Values[f.Key]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s", f.Key, fmtNum(v)))
		}
	}
	s := strings.Join(parts, " ")
	if ms.Error != "" {
		e := ms.Error
		if len(e) > 300 {
			e = e[:300] + "..."
		}
		s += " ERROR: " + e
	}
	return s
}

// machine is where the numbers were taken.
type machine struct {
	CPU            string    `json:"cpu"`
	Cores          int       `json:"cores"`
	Kernel         string    `json:"kernel"`
	Go             string    `json:"go"`
	OS             string    `json:"os"`
	UID            int       `json:"uid"`
	Osandbox       string    `json:"osandbox_version"`
	HarnessNoFile  [2]uint64 `json:"harness_nofile_soft_hard"`
	LoadAvgStart   string    `json:"loadavg_start"`
	LoadAvgEnd     string    `json:"loadavg_end"`
	SomaxconnHost  string    `json:"somaxconn"`
	LocalPortRange string    `json:"ip_local_port_range"`
}

func machineInfo(osandbox string) machine {
	m := machine{
		CPU: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		UID: os.Getuid(), Kernel: readTrim("/proc/sys/kernel/osrelease"), LoadAvgStart: loadAvg(),
		SomaxconnHost: readTrim("/proc/sys/net/core/somaxconn"), LocalPortRange: readTrim("/proc/sys/net/ipv4/ip_local_port_range"),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if name, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command(osandbox, "version").Output(); err == nil {
		m.Osandbox = strings.TrimSpace(string(out))
	}
	return m
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.Join(strings.Fields(string(b)), " ")
}

func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
