package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// result is what one run left behind.
type result struct {
	code           int // osandbox's exit status; -1 if a signal killed osandbox itself
	state          string
	stdout, stderr string
	elapsed        time.Duration
	log            []entry // the audit log; nil when osandbox wrote none
}

// entry is one audit line, decoded by the audit package and also as raw
// fields, to see which fields are present.
type entry struct {
	audit.Event
	fields map[string]json.RawMessage
}

// has reports whether the line carries field, even as zero.
func (e entry) has(field string) bool {
	_, ok := e.fields[field]
	return ok
}

// readAudit decodes an audit log with the audit package, and each line
// again as raw fields. A log that does not exist gives nil, no error.
func readAudit(path string) ([]entry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	events, err := audit.ReadAll(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("audit log does not decode: %w\n%s", err, data)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return []entry{}, nil
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != len(events) {
		return nil, fmt.Errorf("audit log has %d lines but %d events\n%s", len(lines), len(events), data)
	}
	log := make([]entry, len(lines))
	for i, line := range lines {
		log[i].Event = events[i]
		if err := json.Unmarshal(line, &log[i].fields); err != nil {
			return nil, fmt.Errorf("audit line %d: %w\n%s", i+1, err, line)
		}
	}
	return log, nil
}

// wantCode fails t unless osandbox exited with code.
func (r *result) wantCode(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("osandbox exited %d (%s), want %d\nstdout:\n%s\nstderr:\n%s", r.code, r.state, code, r.stdout, r.stderr)
	}
}

// only returns the audit entries of the given kinds, in log order.
func (r *result) only(kinds ...string) []entry {
	var out []entry
	for _, e := range r.log {
		for _, k := range kinds {
			if e.Event.Event == k {
				out = append(out, e)
			}
		}
	}
	return out
}

// decisions are the connect, request and upgrade entries: one per attempt.
func (r *result) decisions() []entry {
	return r.only(audit.EventConnect, audit.EventRequest, audit.EventUpgrade)
}

// decision is the part of a decision event a test pins down exactly; time,
// sandbox, conn, pid, exe and byte counts are checked separately if at all.
type decision struct {
	Event, Decision, Reason, Rule, Proto, Method, Host string
	Port                                               int
	Path                                               string
	Status                                             int
	Dst                                                string
}

func decisionOf(e entry) decision {
	return decision{
		Event: e.Event.Event, Decision: e.Decision, Reason: e.Reason, Rule: e.Rule, Proto: e.Proto,
		Method: e.Method, Host: e.Host, Port: e.Port, Path: e.Path, Status: e.Status, Dst: e.Dst,
	}
}

// wantDecisions fails t unless the run's decision entries are exactly want.
func (r *result) wantDecisions(t *testing.T, want ...decision) []entry {
	t.Helper()
	got := r.decisions()
	if len(got) != len(want) {
		t.Fatalf("%d decision events, want %d; audit log:\n%s", len(got), len(want), r.dump())
	}
	for i := range want {
		if d := decisionOf(got[i]); d != want[i] {
			t.Errorf("decision event %d:\n got %+v\nwant %+v", i, d, want[i])
		}
	}
	return got
}

// wantExit fails t unless the audit log ends with an exit event carrying code.
func (r *result) wantExit(t *testing.T, code int) {
	t.Helper()
	if len(r.log) == 0 {
		t.Fatalf("no audit log\nstderr:\n%s", r.stderr)
	}
	last := r.log[len(r.log)-1]
	if last.Event.Event != audit.EventExit || !last.has(audit.FieldExitCode) || last.ExitCode != code {
		t.Errorf("audit log ends with %s, want an exit event with exit_code %d; log:\n%s",
			last.fields, code, r.dump())
	}
}

// dump is the audit log, one event per line, for failure messages.
func (r *result) dump() string {
	var b strings.Builder
	for _, e := range r.log {
		line, _ := json.Marshal(e.fields)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}
