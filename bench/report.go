package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"
)

// report is bench/results.json.
type report struct {
	Machine   machine           `json:"machine"`
	Started   time.Time         `json:"started"`
	Seconds   float64           `json:"seconds"`
	Knobs     knobs             `json:"knobs"`
	Modes     map[mode]string   `json:"modes"`
	Scenarios []scenarioReport  `json:"scenarios"`
	Notes     map[string]string `json:"notes"`
}

type scenarioReport struct {
	Name    string                      `json:"name"`
	Title   string                      `json:"title"`
	Figures []figureReport              `json:"figures"`
	Goal    string                      `json:"goal,omitempty"`
	Met     *bool                       `json:"met,omitempty"`
	Against string                      `json:"goal_measured,omitempty"`
	Medians map[mode]map[string]float64 `json:"medians"`
	Runs    map[mode][]measurement      `json:"runs"`
	Errors  []string                    `json:"errors,omitempty"`
}

// figureReport is one row: the median per mode and osandbox's ratios.
type figureReport struct {
	figure
	Direct     *float64 `json:"direct,omitempty"`
	Bare       *float64 `json:"bare,omitempty"`
	Osandbox   *float64 `json:"osandbox,omitempty"`
	OverDirect *float64 `json:"osandbox_over_direct,omitempty"`
	OverBare   *float64 `json:"osandbox_over_bare,omitempty"`
}

var modeDoc = map[mode]string{
	direct: "client connects to the origin itself, no proxy",
	bare:   "through osbench's relay (its own process): one head read, then io.Copy both ways (splice); no policy, no audit",
	osb:    "client runs inside `osandbox run` and uses the proxy the sandbox sets (HTTP_PROXY)",
}

func buildReport(m machine, k knobs, start time.Time, outcomes []outcome) report {
	rep := report{Machine: m, Started: start.UTC(), Seconds: time.Since(start).Seconds(), Knobs: k, Modes: modeDoc,
		Notes: map[string]string{
			"values":     "each figure is the median over the interleaved reps of that mode",
			"memory":     "per_conn_kib = (VmRSS of the proxy process holding the connections - VmRSS before they opened) / connections",
			"scale":      fmt.Sprintf("osandbox is started with a soft RLIMIT_NOFILE of %d; nofile_soft/_hard are read from /proc/PID/limits at the peak", scaleLowFD),
			"throughput": "MiB/s of payload received by the client; WebSocket throughput is an echo, so the wire carries it both ways",
		}}
	for _, o := range outcomes {
		rep.Scenarios = append(rep.Scenarios, summarize(o))
	}
	return rep
}

func summarize(o outcome) scenarioReport {
	sr := scenarioReport{Name: o.sc.name, Title: o.sc.title, Runs: o.runs, Medians: map[mode]map[string]float64{}}
	for _, m := range o.sc.modes {
		sr.Medians[m] = medians(o.runs[m])
		for _, r := range o.runs[m] {
			if r.Error != "" {
				sr.Errors = append(sr.Errors, fmt.Sprintf("%s: %s", m, r.Error))
			}
		}
	}
	for _, f := range o.sc.figures {
		fr := figureReport{figure: f}
		get := func(m mode) *float64 {
			if v, ok := sr.Medians[m][f.Key]; ok {
				return &v
			}
			return nil
		}
		fr.Direct, fr.Bare, fr.Osandbox = get(direct), get(bare), get(osb)
		ratio := func(base *float64) *float64 {
			if fr.Osandbox == nil || base == nil || *base == 0 {
				return nil
			}
			r := *fr.Osandbox / *base
			return &r
		}
		fr.OverDirect, fr.OverBare = ratio(fr.Direct), ratio(fr.Bare)
		sr.Figures = append(sr.Figures, fr)
	}
	if g := o.sc.goal; g != nil {
		sr.Goal = g.text
		met, against := g.check(sr.Medians)
		for _, r := range o.runs[osb] {
			if r.Error != "" {
				met = false
			}
		}
		sr.Met, sr.Against = &met, against
	}
	return sr
}

// medians is the per-key median over runs.
func medians(runs []measurement) map[string]float64 {
	byKey := map[string][]float64{}
	for _, r := range runs {
		for k, v := range r.Values {
			byKey[k] = append(byKey[k], v)
		}
	}
	out := map[string]float64{}
	for k, vs := range byKey {
		slices.Sort(vs)
		n := len(vs)
		if n%2 == 1 {
			out[k] = vs[n/2]
		} else {
			out[k] = (vs[n/2-1] + vs[n/2]) / 2
		}
	}
	return out
}

func printTable(w io.Writer, rep report) {
	m := rep.Machine
	fmt.Fprintf(w, "\nosandbox benchmark: %s, %d cores, kernel %s, %s, load %s -> %s", m.CPU, m.Cores, m.Kernel, m.Go, m.LoadAvgStart, m.LoadAvgEnd)
	if rep.Knobs.Quick {
		fmt.Fprint(w, " (BENCH_QUICK)")
	}
	fmt.Fprintf(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tfigure\tunit\tdirect\tbare relay\tosandbox\tosb/direct\tosb/bare\tgoal\tmet\t")
	for _, s := range rep.Scenarios {
		for i, f := range s.Figures {
			name, goalText, met := "", "", ""
			if i == 0 {
				name = s.Name
				goalText = s.Goal
				if s.Met != nil {
					met = map[bool]string{true: "yes", false: "NO"}[*s.Met] + " (" + s.Against + ")"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, f.Label, f.Unit,
				fmtPtr(f.Direct), fmtPtr(f.Bare), fmtPtr(f.Osandbox), fmtRatio(f.OverDirect), fmtRatio(f.OverBare), goalText, met)
		}
	}
	tw.Flush()
	for _, s := range rep.Scenarios {
		extra := scenarioNote(s)
		if extra != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Name, extra)
		}
		for _, e := range s.Errors {
			if len(e) > 400 {
				e = e[:400] + "..."
			}
			fmt.Fprintf(w, "%s: error: %s\n", s.Name, e)
		}
	}
}

// scenarioNote adds what a row cannot hold: the limits and descriptors
// osandbox showed.
func scenarioNote(s scenarioReport) string {
	o := s.Medians[osb]
	switch s.Name {
	case "scale":
		return fmt.Sprintf("osandbox started with soft NOFILE %.0f; /proc/PID/limits at peak: soft %.0f, hard %.0f; %.0f fds (%.0f pipes), RSS %.0f MiB",
			o["nofile_started"], o["nofile_soft"], o["nofile_hard"], o["fds"], o["pipes"], o["rss_kib"]/1024)
	case "memory":
		b := s.Medians[bare]
		return fmt.Sprintf("osandbox RSS %.0f -> %.0f KiB, %.0f fds (%.0f pipes) held; bare relay RSS %.0f -> %.0f KiB, %.0f fds (%.0f pipes)",
			o["rss_base_kib"], o["rss_held_kib"], o["fds_held"], o["pipes_held"], b["rss_base_kib"], b["rss_held_kib"], b["fds_held"], b["pipes_held"])
	}
	return ""
}

func fmtPtr(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmtNum(*v)
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *v)
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000 || a == math.Trunc(a):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func writeJSON(path string, rep report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
