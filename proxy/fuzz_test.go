package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// FuzzScanHead feeds arbitrary bytes to the request-head reader: it must
// never panic, never accept a head over the limit, and never accept framing
// that checkFraming refuses.
func FuzzScanHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
		"\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	const limit = 1 << 10
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(b), limit+64)
		err := scanHead(r, limit)
		if err != nil {
			return
		}
		head, _ := r.Peek(r.Buffered())
		end := headEnd(head, 0)
		if end < 0 || end > limit {
			t.Fatalf("accepted a head of %d bytes (limit %d)", end, limit)
		}
		if bytes.Contains(head[:end], []byte("\n\n")) || bytes.Contains(head[:end], []byte("\n ")) {
			t.Fatalf("accepted ambiguous framing %q", head[:end])
		}
	})
}

// FuzzNormalizePath: normalisation is idempotent, always absolute, and
// never leaves a dot segment or an empty segment behind.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "//a//b/", "/a%2Fb", "/%61%7e", "a/b", "/..", "/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p := normalizePath(raw)
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("normalizePath(%q) = %q: not absolute", raw, p)
		}
		if q := normalizePath(p); q != p {
			t.Fatalf("not idempotent: %q -> %q -> %q", raw, p, q)
		}
		for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("normalizePath(%q) = %q keeps a dot segment", raw, p)
			}
		}
		if strings.Contains(p, "//") {
			t.Fatalf("normalizePath(%q) = %q keeps //", raw, p)
		}
	})
}

// FuzzClientHelloSNI: sniffing arbitrary bytes never panics and never
// consumes anything.
func FuzzClientHelloSNI(f *testing.F) {
	f.Add(clientHello(f, "example.com"))
	f.Add(fragment(clientHello(f, "example.com"), 40))
	f.Add(clientHello(f, ""))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
	f.Add([]byte{0x16})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(b), 1<<17)
		_, _ = clientHelloSNI(r)
		if all, _ := io.ReadAll(r); !bytes.Equal(all, b) {
			t.Fatal("sniffing consumed bytes")
		}
	})
}

// clientHello records the first flight of a real TLS client.
func clientHello(tb testing.TB, sni string) []byte {
	tb.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		cfg := &tls.Config{ServerName: sni, InsecureSkipVerify: sni == ""}
		_ = tls.Client(c, cfg).Handshake()
		c.Close()
	}()
	var buf bytes.Buffer
	_ = s.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 4096)
	n, _ := s.Read(b)
	buf.Write(b[:n])
	return buf.Bytes()
}

// fragment re-frames a one-record ClientHello as records of size bytes.
func fragment(hello []byte, size int) []byte {
	var out []byte
	for payload := hello[5:]; len(payload) > 0; {
		n := min(size, len(payload))
		out = append(out, hello[0], hello[1], hello[2], byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

func TestClientHelloSNIFragmented(t *testing.T) {
	hello := clientHello(t, "fronted.example")
	for _, size := range []int{1, 3, 50, 200} {
		r := bufio.NewReaderSize(bytes.NewReader(fragment(hello, size)), 64<<10)
		if got, ok := clientHelloSNI(r); !ok || got != "fronted.example" {
			t.Errorf("records of %d bytes: SNI = %q, %v", size, got, ok)
		}
	}
	// Too fragmented to fit the buffer: refused, not passed without a name.
	r := bufio.NewReaderSize(bytes.NewReader(fragment(hello, 1)), 4096)
	if got, ok := clientHelloSNI(r); ok {
		t.Errorf("an unreadable ClientHello gave SNI %q", got)
	}
}

func TestClientHelloSNI(t *testing.T) {
	for _, name := range []string{"example.com", "a.b.test"} {
		hello := clientHello(t, name)
		r := bufio.NewReader(bytes.NewReader(hello))
		if got, ok := clientHelloSNI(r); !ok || got != name {
			t.Errorf("SNI = %q, %v; want %q", got, ok, name)
		}
		if r.Buffered() != len(hello) {
			t.Errorf("sniffing consumed bytes: %d buffered of %d", r.Buffered(), len(hello))
		}
	}
}

// FuzzDNSAnswer: any DNS message gets a reply (or none) without a panic,
// and only names the policy could allow ever get an address.
func FuzzDNSAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"allowed.test.", dns.TypeA}, {"denied.test.", dns.TypeA}, {"allowed.test.", dns.TypeAAAA}, {"allowed.test.", dns.TypeMX}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		b, _ := m.Pack()
		f.Add(b)
	}
	pol, err := policies.Parse([]byte("version: 1\nallow:\n  - name: a\n    hosts: [allowed.test]\n"), "f.yaml")
	if err != nil {
		f.Fatal(err)
	}
	p := &Proxy{cfg: Config{Policy: pol, Audit: audit.New(&bytes.Buffer{}, audit.Options{})}, names: newNameMap()}
	f.Fuzz(func(t *testing.T, b []byte) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil {
			return
		}
		resp := p.dnsAnswer(q)
		for _, rr := range resp.Answer {
			if !strings.EqualFold(rr.Header().Name, "allowed.test.") {
				t.Fatalf("answered %v for a name no rule allows", rr)
			}
		}
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v", err)
		}
	})
}

// scriptedConn is a client connection that sends in and records what the
// proxy writes; it has no deadlines and no network.
type scriptedConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptedConn) Read(b []byte) (int, error)  { return c.in.Read(b) }
func (c *scriptedConn) Write(b []byte) (int, error) { return c.out.Write(b) }
func (c *scriptedConn) Close() error                { return nil }
func (c *scriptedConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3128}
}
func (c *scriptedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzClientLoop feeds arbitrary bytes to the proxy listener's request
// loop under a policy that allows nothing, so no input may reach a dial:
// it must never panic or hang, and every answer it gives is a refusal with
// the JSON denial that has exactly one audit event (a head that never
// ends gets neither). Heads between the first small reader and the limit
// exercise the move to a larger reader.
func FuzzClientLoop(f *testing.F) {
	big := "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nX-Big: " + strings.Repeat("b", 6<<10) + "\r\n\r\n"
	for _, s := range []string{
		"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
		"GET /origin-form HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"POST http://a.example/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET http://a.example/ HTTP/2.0\r\n\r\n",
		"GET http://a.example/ HTTP/1.1\nHost: a\n\n",
		"GET ftp://a.example/ HTTP/1.1\r\n\r\n",
		"CONNECT /x HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
		big,
		big + big,
		"GET http://a.example/",
	} {
		f.Add([]byte(s))
	}
	pol, err := policies.Parse([]byte("version: 1\n"), "deny-all.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var log bytes.Buffer
		al := audit.New(&log, audit.Options{Sandbox: "fuzz", FlushInterval: time.Hour})
		p, err := New(Config{Policy: pol, Audit: al, Limits: Limits{MaxHeaderBytes: 8 << 10}})
		if err != nil {
			t.Fatal(err)
		}
		c := &scriptedConn{in: bytes.NewReader(in)}
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.serveClient(c)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the loop did not end on %q\n%s", in, buf[:runtime.Stack(buf, true)])
		}
		if err := al.Close(); err != nil {
			t.Fatal(err)
		}
		evs, err := audit.ReadAll(&log)
		if err != nil {
			t.Fatalf("audit does not decode: %v", err)
		}
		answers := 0
		r := bufio.NewReader(&c.out)
		for {
			if _, err := r.Peek(1); err == io.EOF {
				break
			}
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				t.Fatalf("answer %d does not parse: %v\n%q", answers+1, err, c.out.Bytes())
			}
			body, _ := io.ReadAll(resp.Body)
			var d denial
			if resp.StatusCode < 400 || resp.StatusCode > 431 || json.Unmarshal(body, &d) != nil || d.Reason == "" {
				t.Fatalf("answer %d: %d %q, want a refusal with the JSON denial", answers+1, resp.StatusCode, body)
			}
			answers++
		}
		if answers != len(evs) || answers > 1 {
			t.Fatalf("%d answers, %d audit events: want one event per answer and at most one answer", answers, len(evs))
		}
		for _, e := range evs {
			if e.Decision != audit.DecisionDeny {
				t.Fatalf("audit event %+v: a deny-all policy allowed something", e)
			}
		}
	})
}
