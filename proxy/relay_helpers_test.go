package proxy

// Helpers for the relay tests (relay_*_test.go): policies for one loopback
// port, raw upstreams that misbehave on purpose, raw clients that write
// their requests by hand through the proxy, and audit look-ups that wait for
// events emitted after the client has its answer.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// relayTimeout bounds every wait in the relay tests, so a hang fails fast.
const relayTimeout = 10 * time.Second

// relayRule names the allow rule of every relay-test policy.
const relayRule = "relay"

// relayPolicy allows 127.0.0.1:port under relayRule. Without inspect the
// rule has no http: any request and any Upgrade, and a CONNECT is a blind
// tunnel. With inspect it has one http entry, any method on "/**",
// permitting the given Upgrade protocols (none when there are none), and a
// CONNECT is inspected.
func relayPolicy(port int, inspect bool, upgrades ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nallow:\n  - name: %s\n    hosts: [127.0.0.1]\n    ports: [%d]\n", relayRule, port)
	if inspect {
		b.WriteString("    http:\n      - methods: [\"*\"]\n        paths: [\"/**\"]\n")
		if len(upgrades) > 0 {
			fmt.Fprintf(&b, "        upgrade: [%s]\n", strings.Join(upgrades, ", "))
		}
	}
	return b.String()
}

// relayPath is one way a client reaches an upstream through the proxy.
type relayPath struct {
	name    string
	connect bool // CONNECT first, then origin-form requests; else absolute URIs
	inspect bool // the policy has http rules (relayPolicy's inspect)
}

var (
	forwardPath    = relayPath{name: "forward", inspect: true}
	forwardAnyPath = relayPath{name: "forward_no_http_rule"}
	inspectedPath  = relayPath{name: "inspected_connect", connect: true, inspect: true}
	blindPath      = relayPath{name: "blind_connect", connect: true}
)

// rawClient talks to an upstream through the proxy with requests written
// by hand, so a test controls every byte it sends and sees every byte back.
type rawClient struct {
	t      *testing.T
	conn   *net.TCPConn
	r      *bufio.Reader
	target string // 127.0.0.1:port, the upstream
	path   relayPath
}

// dialRaw connects to tp and, on a CONNECT path, opens the tunnel to
// 127.0.0.1:port. Every read and write must finish within relayTimeout.
func dialRaw(t *testing.T, tp *testProxy, path relayPath, port int) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", tp.Addr, relayTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(relayTimeout))
	rc := &rawClient{t: t, conn: c.(*net.TCPConn), r: bufio.NewReader(c),
		target: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), path: path}
	if path.connect {
		rc.write(fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", rc.target, rc.target))
		resp, err := http.ReadResponse(rc.r, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("CONNECT %s: %v", rc.target, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT %s: %s", rc.target, resp.Status)
		}
	}
	return rc
}

func (c *rawClient) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// uri is the request-target for path: an absolute URI on the forward path.
func (c *rawClient) uri(path string) string {
	if c.path.connect {
		return path
	}
	return "http://" + c.target + path
}

// send writes a request head with the "Name: value" lines in headers, and
// extra right after it, in one write. Host is the target unless headers
// name one.
func (c *rawClient) send(method, path string, headers []string, extra []byte) {
	c.t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", method, c.uri(path))
	hasHost := false
	for _, h := range headers {
		hasHost = hasHost || strings.HasPrefix(strings.ToLower(h), "host:")
		b.WriteString(h + "\r\n")
	}
	if !hasHost {
		b.WriteString("Host: " + c.target + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(extra)
	c.write(b.String())
}

// read reads the next response head (a 1xx one too) to a request with
// method; its body reads from the connection.
func (c *rawClient) read(method string) *http.Response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.r, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	return resp
}

// upgrade asks to switch to proto and requires the 101 for it.
func (c *rawClient) upgrade(proto string) {
	c.t.Helper()
	c.send(http.MethodGet, "/up", []string{"Connection: Upgrade", "Upgrade: " + proto}, nil)
	resp := c.read(http.MethodGet)
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), proto) {
		c.t.Fatalf("upgrade to %s: got %s, Upgrade %q", proto, resp.Status, resp.Header.Get("Upgrade"))
	}
}

func (c *rawClient) readFull(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// drain reads until the proxy ends the connection. It fails the test if
// the connection is still open when the deadline passes.
func (c *rawClient) drain(within time.Duration) []byte {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %v (read %q)", within, b)
	}
	return b
}

// rawUpstream is a TCP server on 127.0.0.1 that hands each connection to
// a handler written for the test.
type rawUpstream struct {
	port int
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted int
	seen     []*http.Request
}

type upstreamHandler func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader)

// startRawUpstream serves handle until the test ends; then it closes every
// connection and waits for the handlers.
func startRawUpstream(t *testing.T, handle upstreamHandler) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{port: ln.Addr().(*net.TCPAddr).Port, ln: ln, conns: map[net.Conn]struct{}{}}
	u.wg.Add(1)
	go u.acceptLoop(handle)
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *rawUpstream) acceptLoop(handle upstreamHandler) {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		u.conns[c] = struct{}{}
		u.accepted++
		u.mu.Unlock()
		_ = c.SetDeadline(time.Now().Add(relayTimeout))
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer func() {
				c.Close()
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
			}()
			handle(u, c.(*net.TCPConn), bufio.NewReader(c))
		}()
	}
}

// readRequest reads a request head and records it.
func (u *rawUpstream) readRequest(r *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(r)
	if err == nil {
		u.mu.Lock()
		u.seen = append(u.seen, req)
		u.mu.Unlock()
	}
	return req, err
}

// requests are the request heads the upstream has read so far.
func (u *rawUpstream) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.seen...)
}

// open is how many of the upstream's connections are still open.
func (u *rawUpstream) open() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// echoUpstream serves keep-alive requests. One that asks for an Upgrade
// gets a 101 for the protocol asked, then an echo of every byte until EOF,
// then a half-close; any other gets 200 "ok".
func echoUpstream(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
	for {
		req, err := u.readRequest(r)
		if err != nil {
			return
		}
		if proto := req.Header.Get("Upgrade"); proto != "" {
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", proto)
			_, _ = io.Copy(c, r)
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, r)
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

// tunnelTransport reaches every address through a CONNECT to tp, so the
// requests inside are origin-form, as from a client that tunnels
// everything.
func tunnelTransport(tp *testProxy) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", tp.Addr)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(relayTimeout))
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err == nil && resp.StatusCode != http.StatusOK {
			err = errors.New(resp.Status)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("CONNECT %s: %w", addr, err)
		}
		_ = c.SetDeadline(time.Time{})
		return &tunnelConn{Conn: c, r: br}, nil
	}}
}

// tunnelConn reads through the reader that read the CONNECT response, so
// no byte past it is lost.
type tunnelConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *tunnelConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// waitAudit polls the audit log until some event matches, and returns it.
func (tp *testProxy) waitAudit(t *testing.T, what string, match func(audit.Event) bool) audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := tp.events(t)
		for _, e := range evs {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			for _, e := range evs {
				t.Logf("audit: %+v", e)
			}
			t.Fatalf("no audit event: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditFields decodes each audit line into its raw fields, to tell a field
// written as zero from one left out.
func (tp *testProxy) auditFields(t *testing.T) []map[string]json.RawMessage {
	t.Helper()
	if err := tp.log.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []map[string]json.RawMessage
	for _, line := range bytes.Split(bytes.TrimSpace(tp.audit.Bytes()), []byte("\n")) {
		m := map[string]json.RawMessage{}
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// requireFields fails unless the audit line of event kind on conn has
// every field in names, even if zero.
func (tp *testProxy) requireFields(t *testing.T, kind string, conn uint64, names ...string) {
	t.Helper()
	for _, m := range tp.auditFields(t) {
		var ev string
		var id uint64
		_ = json.Unmarshal(m[audit.FieldEvent], &ev)
		_ = json.Unmarshal(m[audit.FieldConn], &id)
		if ev != kind || id != conn {
			continue
		}
		for _, n := range names {
			if _, ok := m[n]; !ok {
				t.Errorf("%s event of conn %d has no %q field", kind, conn, n)
			}
		}
		return
	}
	t.Errorf("no %s event for conn %d", kind, conn)
}

// upgradeEvents finds the request (allow_upgrade), upgrade and close
// events of the one upgrade the proxy made, waiting for the close.
func (tp *testProxy) upgradeEvents(t *testing.T) (req, upg, cls audit.Event) {
	t.Helper()
	req = tp.waitAudit(t, "request allow_upgrade", func(e audit.Event) bool {
		return e.Event == audit.EventRequest && e.Decision == audit.DecisionAllowUpgrade
	})
	upg = tp.waitAudit(t, "upgrade", func(e audit.Event) bool {
		return e.Event == audit.EventUpgrade && e.Conn == req.Conn
	})
	cls = tp.waitAudit(t, "close", func(e audit.Event) bool {
		return e.Event == audit.EventClose && e.Conn == req.Conn
	})
	return req, upg, cls
}
