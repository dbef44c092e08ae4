package proxy

import (
	"bytes"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// testProxy is a Proxy on a real loopback listener with its audit log in
// memory.
type testProxy struct {
	*Proxy
	Addr  string
	URL   *url.URL
	audit *syncBuffer
	log   *audit.Log
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// startProxy serves a proxy for policyYAML (a whole policy file) until the
// test ends. mutate, if non-nil, adjusts the Config first.
func startProxy(t *testing.T, policyYAML string, mutate func(*Config)) *testProxy {
	t.Helper()
	return startProxyHooked(t, policyYAML, mutate, nil)
}

// startProxyHooked is startProxy with hook run on the Proxy before it
// serves: the place to replace the dialer's dialAddr without a race.
func startProxyHooked(t *testing.T, policyYAML string, mutate func(*Config), hook func(*Proxy)) *testProxy {
	t.Helper()
	pol, err := policies.Parse([]byte(policyYAML), "test.yaml")
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	buf := &syncBuffer{}
	log := audit.New(buf, audit.Options{Sandbox: "test", FlushInterval: time.Hour})
	cfg := Config{Policy: pol, Audit: log}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Serve(ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	tp := &testProxy{Proxy: p, Addr: ln.Addr().String(), audit: buf, log: log}
	tp.URL = &url.URL{Scheme: "http", Host: tp.Addr}
	t.Cleanup(func() {
		p.Close()
		<-done
		log.Close()
	})
	return tp
}

// events flushes the audit log and decodes it.
func (tp *testProxy) events(t *testing.T) []audit.Event {
	t.Helper()
	if err := tp.log.Flush(); err != nil {
		t.Fatal(err)
	}
	evs, err := audit.ReadAll(bytes.NewReader(tp.audit.Bytes()))
	if err != nil {
		t.Fatalf("audit log does not decode: %v", err)
	}
	return evs
}

// eventsOf returns the events of one kind.
func eventsOf(evs []audit.Event, kind string) []audit.Event {
	var out []audit.Event
	for _, e := range evs {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}
