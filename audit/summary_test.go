package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummaryTargets(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	events := []Event{
		{Time: at(0), Sandbox: "a", Event: EventStart},
		{Time: at(1), Sandbox: "a", Event: EventConnect, Conn: 1, Decision: DecisionAllow, Host: "b.example", Port: 443},
		{Time: at(2), Sandbox: "a", Event: EventRequest, Conn: 2, Decision: DecisionDeny, Host: "b.example", Port: 443},
		{Time: at(3), Sandbox: "a", Event: EventUpgrade, Conn: 3, Decision: DecisionAllowUpgrade, Host: "a.example", Port: 80},
		{Time: at(4), Sandbox: "a", Event: EventClose, Conn: 1, Host: "b.example", Port: 443, BytesUp: 100, BytesDown: 2000},
		// A close without host and port is put where its connection went.
		{Time: at(5), Sandbox: "a", Event: EventClose, Conn: 3, BytesUp: 1, BytesDown: 2},
		// Connection ids repeat across runs: conn 1 of run b is another connection.
		{Time: at(6), Sandbox: "b", Event: EventConnect, Conn: 1, Decision: DecisionAllow, Host: "a.example", Port: 80},
		{Time: at(7), Sandbox: "b", Event: EventClose, Conn: 1, BytesUp: 5},
		{Time: at(8), Sandbox: "b", Event: EventDNS, Decision: DecisionAllow, Name: "a.example"},
		{Time: at(9), Sandbox: "b", Event: EventDNS, Decision: DecisionDeny, Name: "c.example"},
		// Earlier than what was seen so far: first seen moves back.
		{Time: at(-1), Sandbox: "b", Event: EventRequest, Conn: 4, Decision: DecisionAllow, Host: "b.example", Port: 8443},
	}
	var s Summary
	for _, e := range events {
		s.Add(e)
	}
	want := []Target{
		{Host: "a.example", Port: 80, Allowed: 1, Upgrades: 1, BytesUp: 6, BytesDown: 2, FirstSeen: at(3), LastSeen: at(7)},
		{Host: "b.example", Port: 443, Allowed: 1, Denied: 1, BytesUp: 100, BytesDown: 2000, FirstSeen: at(1), LastSeen: at(4)},
		{Host: "b.example", Port: 8443, Allowed: 1, FirstSeen: at(-1), LastSeen: at(-1)},
	}
	got := s.Targets()
	if len(got) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if s.Events != len(events) || s.DNSAllowed != 1 || s.DNSDenied != 1 {
		t.Errorf("events %d, dns %d/%d; want %d, 1/1", s.Events, s.DNSAllowed, s.DNSDenied, len(events))
	}
}

func TestSummaryTableGolden(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "export", "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s Summary
	if err := Scan(f, func(e Event) error { s.Add(e); return nil }); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := s.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	golden(t, "run.summary.golden", out.Bytes())
	if strings.Contains(out.String(), " /C") {
		t.Error("a host with a space was printed raw")
	}
}

func TestHumanBytes(t *testing.T) {
	cases := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{10 * 1024, "10 KiB"},
		{1572864, "1.5 MiB"},
		{123 << 20, "123 MiB"},
		{5 << 30, "5.0 GiB"},
		{1 << 62, "4.0 EiB"},
	}
	for _, c := range cases {
		if got := HumanBytes(c.n); got != c.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
