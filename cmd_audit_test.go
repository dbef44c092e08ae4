package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/audit"
)

var sampleLog = filepath.Join("audit", "testdata", "export", "run.jsonl")

func TestAuditExport(t *testing.T) {
	data, err := os.ReadFile(sampleLog)
	if err != nil {
		t.Fatal(err)
	}
	events, err := audit.ReadAll(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	count := func(pred func(audit.Event) bool) int {
		n := 0
		for _, e := range events {
			if pred(e) {
				n++
			}
		}
		return n
	}
	cases := []struct {
		name  string
		args  []string
		stdin string
		check func(t *testing.T, out string)
	}{
		{"jsonl from a file", []string{sampleLog}, "", func(t *testing.T, out string) {
			got, err := audit.ReadAll(strings.NewReader(out))
			if err != nil || len(got) != len(events) {
				t.Errorf("%d events (%v), want %d", len(got), err, len(events))
			}
		}},
		{"json from stdin, denials only", []string{"--format", "json", "--decision", "deny", "-"}, string(data), func(t *testing.T, out string) {
			var arr []map[string]any
			if err := json.Unmarshal([]byte(out), &arr); err != nil {
				t.Fatal(err)
			}
			if want := count(func(e audit.Event) bool { return e.Decision == audit.DecisionDeny }); len(arr) != want {
				t.Errorf("%d objects, want %d", len(arr), want)
			}
			for _, o := range arr {
				if o["decision"] != "deny" {
					t.Errorf("object with decision %v", o["decision"])
				}
			}
		}},
		{"csv", []string{"--format", "csv", sampleLog}, "", func(t *testing.T, out string) {
			rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			if err != nil || len(rows) != len(events)+1 || rows[0][0] != "time" {
				t.Errorf("%d rows (%v), want a header and %d", len(rows), err, len(events))
			}
		}},
		{"ocsf carries this build as the product", []string{"--format", "ocsf", sampleLog}, "", func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if want := count(func(e audit.Event) bool { return e.Event != audit.EventStart && e.Event != audit.EventExit }); len(lines) != want {
				t.Errorf("%d objects, want %d", len(lines), want)
			}
			var o struct {
				Metadata struct {
					Version string
					Product struct{ Name, Version string }
				}
			}
			if err := json.Unmarshal([]byte(lines[0]), &o); err != nil {
				t.Fatal(err)
			}
			if o.Metadata.Version != audit.OCSFVersion || o.Metadata.Product.Name != "osandbox" || o.Metadata.Product.Version != product().Version {
				t.Errorf("metadata %+v", o.Metadata)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := cliRun(t, c.stdin, append([]string{"audit", "export"}, c.args...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			c.check(t, out)
		})
	}

	// A log cut short: what was read is exported, then a one-line error.
	code, out, errOut := cliRun(t, string(data)+`{"time":`, "audit", "export", "--format", "json", "-")
	var arr []any
	if code != 1 || json.Unmarshal([]byte(out), &arr) != nil || len(arr) != len(events) {
		t.Errorf("truncated log: exit %d, %d objects; want 1 and %d", code, len(arr), len(events))
	}
	wantErrorLines(t, errOut)
	if !strings.Contains(errOut, "audit export: -: line 13:") {
		t.Errorf("stderr %q does not name the line", errOut)
	}
}

func TestAuditSummary(t *testing.T) {
	code, out, errOut := cliRun(t, "", "audit", "summary", sampleLog)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "HOST:PORT") || !strings.Contains(out, "registry.npmjs.org:443") ||
		!strings.Contains(out, "2.0 KiB  1.5 MiB") || !strings.HasPrefix(lines[len(lines)-1], "6 targets:") {
		t.Errorf("table:\n%s", out)
	}

	code, out, _ = cliRun(t, "", "audit", "summary", "--json", sampleLog)
	var targets []audit.Target
	if err := json.Unmarshal([]byte(out), &targets); code != 0 || err != nil || len(targets) != 6 {
		t.Fatalf("exit %d, %v: %s", code, err, out)
	}
	for i := 1; i < len(targets); i++ {
		if targets[i-1].Host > targets[i].Host {
			t.Errorf("not sorted by host: %q before %q", targets[i-1].Host, targets[i].Host)
		}
	}
	npm := targets[len(targets)-1]
	if npm.Host != "registry.npmjs.org" || npm.Allowed != 1 || npm.BytesUp != 2048 || npm.BytesDown != 1572864 || npm.FirstSeen.IsZero() {
		t.Errorf("registry.npmjs.org: %+v", npm)
	}
}
