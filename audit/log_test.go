package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the flusher and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func readEvents(t *testing.T, path string) []Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events, err := ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestLogFillsAndAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	now := time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("X", -7200))
	opts := Options{Sandbox: "run1", Now: func() time.Time { return now }}

	l, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	l.Emit(Event{Event: EventStart, PolicySHA256: "abc"})
	l.Emit(Event{Event: EventDNS, Sandbox: "other", Time: t0, Decision: DecisionAllow, Name: "a"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A second run appends; it never truncates.
	l, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	l.Emit(Event{Event: EventExit})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	events := readEvents(t, path)
	if len(events) != 3 {
		t.Fatalf("got %d events, want 3", len(events))
	}
	if e := events[0]; e.Sandbox != "run1" || !e.Time.Equal(now) || e.Time.Location() != time.UTC {
		t.Errorf("start not filled: %+v", e)
	}
	if e := events[1]; e.Sandbox != "other" || !e.Time.Equal(t0) || e.Proto != ProtoDNS {
		t.Errorf("dns: caller's sandbox/time kept and proto filled, got %+v", e)
	}
	if events[2].Event != EventExit {
		t.Errorf("third event %+v", events[2])
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestLogConcurrentEmit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	// A tiny interval so the flusher races with the emitters.
	l, err := Open(path, Options{Sandbox: NewID(), FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				conn := l.NextConn()
				l.Emit(Event{Event: EventConnect, Conn: conn, Decision: DecisionAllow, Host: "h", Port: 443})
				l.Emit(Event{Event: EventRequest, Conn: conn, Decision: DecisionAllow, Method: "GET",
					Host: "h", Port: 443, Path: "/" + strings.Repeat("p", int(conn%3000))}) // some lines span buffers
				l.Emit(Event{Event: EventClose, Conn: conn, BytesUp: int64(conn)})
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	events := readEvents(t, path)
	if len(events) != workers*each*3 {
		t.Fatalf("got %d events, want %d", len(events), workers*each*3)
	}
	seen := make(map[uint64]int)
	for _, e := range events {
		seen[e.Conn]++
		if e.Event == EventClose && uint64(e.BytesUp) != e.Conn {
			t.Fatalf("close event mixed up: %+v", e)
		}
	}
	for id := uint64(1); id <= workers*each; id++ {
		if seen[id] != 3 {
			t.Fatalf("conn %d has %d events, want 3", id, seen[id])
		}
	}
}

func TestLogFlushInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, Options{FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Emit(Event{Event: EventExit, ExitCode: 7})
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 0 {
			e, err := ParseLine(data)
			if err != nil || e.ExitCode != 7 {
				t.Fatalf("flushed %q: %+v, %v", data, e, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("event not flushed without Close")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogFlush(t *testing.T) {
	var buf syncBuffer
	l := New(&buf, Options{FlushInterval: time.Hour})
	defer l.Close()
	l.Emit(Event{Event: EventExit})
	if buf.String() != "" {
		t.Fatal("written before Flush with a one-hour interval")
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseLine([]byte(buf.String())); err != nil {
		t.Fatalf("after Flush: %q: %v", buf.String(), err)
	}
}

func TestLogCloseIdempotentAndEmitAfterClose(t *testing.T) {
	var buf, denials syncBuffer
	l := New(&buf, Options{Denials: &denials})
	l.Emit(Event{Event: EventExit})
	for range 3 {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	l.Emit(Event{Event: EventConnect, Decision: DecisionDeny, Host: "h", Port: 1}) // must not panic
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("%d lines after Close, want 1: %q", n, buf.String())
	}
	if denials.String() != "" {
		t.Errorf("denial printed after Close: %q", denials.String())
	}

	var nilLog *Log // a nil Log discards
	nilLog.Emit(Event{Event: EventExit})
	if nilLog.NextConn() != 0 || nilLog.Flush() != nil || nilLog.Close() != nil {
		t.Error("nil Log should do nothing")
	}
}

func TestLogDenials(t *testing.T) {
	var denials syncBuffer
	l, err := Open("", Options{Denials: &denials}) // writes nowhere, still prints denials
	if err != nil {
		t.Fatal(err)
	}
	l.Emit(Event{Event: EventConnect, Decision: DecisionDeny, Reason: "no_matching_rule",
		Proto: ProtoConnect, Host: "evil.example", Port: 443})
	l.Emit(Event{Event: EventConnect, Decision: DecisionAllow, Reason: "rule_allow", Host: "ok", Port: 443})
	l.Emit(Event{Event: EventRequest, Decision: DecisionDeny, Reason: "no_matching_rule",
		Proto: ProtoHTTP, Method: "GET", Host: "evil.example", Port: 80, Path: "/x?q=1"})
	l.Emit(Event{Event: EventDNS, Decision: DecisionDeny, Reason: "no_matching_rule",
		Name: "evil.example", QType: "A"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	want := "osandbox: denied CONNECT evil.example:443 (no_matching_rule)\n" +
		"osandbox: denied GET http://evil.example/x (no_matching_rule)\n" +
		"osandbox: denied DNS evil.example A (no_matching_rule)\n"
	if denials.String() != want {
		t.Errorf("denials\n%s\nwant\n%s", denials.String(), want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestLogWriteErrorReported(t *testing.T) {
	l := New(failWriter{}, Options{})
	l.Emit(Event{Event: EventExit})
	if err := l.Flush(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Flush = %v, want the write error", err)
	}
	if err := l.Close(); err == nil {
		t.Error("Close hid the write error")
	}
}

func TestOpenError(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "audit.jsonl"), Options{}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

func TestNextConnAndNewID(t *testing.T) {
	l := New(nil, Options{})
	defer l.Close()
	for want := uint64(1); want <= 3; want++ {
		if got := l.NextConn(); got != want {
			t.Fatalf("NextConn = %d, want %d", got, want)
		}
	}
	a, b := NewID(), NewID()
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(a) || a == b {
		t.Errorf("NewID gave %q and %q", a, b)
	}
}

func BenchmarkEmit(b *testing.B) {
	l := New(discard{}, Options{Sandbox: NewID()})
	defer l.Close()
	e := Event{Event: EventRequest, Conn: 1, Decision: DecisionAllow, Reason: "rule_allow",
		Rule: "npm", Proto: ProtoHTTPS, Method: "GET", Host: "registry.npmjs.org", Port: 443,
		Path: "/@types%2fnode?x=1", Status: 200, Dst: "104.16.0.1:443", PID: 1234, Exe: "/usr/bin/node"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Emit(e)
		}
	})
}

// discard is io.Discard without its ReaderFrom, so bufio really buffers.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
