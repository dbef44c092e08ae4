package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// answerEach answers every request on a connection with 200 and the path,
// and closes after limit responses (0: never), without saying so, as a
// server with a keep-alive request limit or idle timeout does.
func answerEach(limit int) upstreamHandler {
	return func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		for n := 1; ; n++ {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
			if n == limit {
				c.Close()
				return
			}
		}
	}
}

func (u *rawUpstream) acceptedConns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.accepted
}

// TestForwardKeepAlive: requests on one client connection to the same
// target share one upstream connection; an upstream that closes its side
// between requests (a request limit, an idle timeout) costs the client
// nothing: the next request goes out on a new connection, not a 502.
func TestForwardKeepAlive(t *testing.T) {
	cases := []struct {
		name      string
		perConn   int           // responses the upstream gives a connection; 0: no limit
		pause     time.Duration // between requests
		wantConns int
	}{
		{"shared", 0, 0, 1},
		// Past recentUse, when a kept connection is looked at before use.
		{"upstream_closed_idle", 1, 2 * recentUse, 5},
		// Within recentUse the closed connection is used, fails before any
		// answer, and the request goes again on a new one.
		{"upstream_closed_at_once", 1, 10 * time.Millisecond, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startRawUpstream(t, answerEach(tc.perConn))
			tp := startProxy(t, relayPolicy(up.port, false), nil)
			c := dialRaw(t, tp, forwardPath, up.port)
			for i := range 5 {
				path := fmt.Sprintf("/r%d", i)
				c.send(http.MethodGet, path, nil, nil)
				requireBody(t, c.read(http.MethodGet), http.StatusOK, path)
				time.Sleep(tc.pause)
			}
			if n := up.acceptedConns(); n != tc.wantConns {
				t.Errorf("upstream accepted %d connections for 5 requests, want %d", n, tc.wantConns)
			}
		})
	}
}

// TestForwardTargetSwitch: one client connection may name different
// targets; each request goes to the upstream its URI names, decided on
// its own, and the audit names the address each one used.
func TestForwardTargetSwitch(t *testing.T) {
	a := startRawUpstream(t, answerEach(0))
	b := startRawUpstream(t, answerEach(0))
	policy := fmt.Sprintf("version: 1\nallow:\n  - name: both\n    hosts: [127.0.0.1]\n    ports: [%d, %d]\n", a.port, b.port)
	tp := startProxy(t, policy, nil)
	c := dialRaw(t, tp, forwardPath, a.port)
	for i, port := range []int{a.port, b.port, a.port} {
		path := fmt.Sprintf("/%d", i)
		fmt.Fprintf(c.conn, "GET http://127.0.0.1:%d%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port, path, a.port)
		requireBody(t, c.read(http.MethodGet), http.StatusOK, path)
	}
	if na, nb := len(a.requests()), len(b.requests()); na != 2 || nb != 1 {
		t.Errorf("upstreams got %d and %d requests, want 2 and 1", na, nb)
	}
	for _, r := range b.requests() {
		if r.Host != fmt.Sprintf("127.0.0.1:%d", b.port) {
			t.Errorf("upstream b got Host %q: the absolute URI's authority must replace it", r.Host)
		}
	}
	// A request is audited once its response is through, so the last
	// event may trail the client's read by a moment.
	tp.waitAudit(t, "the third request", func(e audit.Event) bool { return e.Event == audit.EventRequest && e.Path == "/2" })
	evs := eventsOf(tp.events(t), audit.EventRequest)
	if len(evs) != 3 {
		t.Fatalf("%d request events, want 3", len(evs))
	}
	for i, port := range []int{a.port, b.port, a.port} {
		if evs[i].Port != port || !strings.HasSuffix(evs[i].Dst, fmt.Sprintf(":%d", port)) {
			t.Errorf("event %d: port %d dst %q, want port and dst %d", i, evs[i].Port, evs[i].Dst, port)
		}
	}
}

// TestForwardDenialReadable: a denied request whose body the client is
// still sending gets its 403 and a clean end, not a reset that would
// destroy the answer before the client reads it.
func TestForwardDenialReadable(t *testing.T) {
	up := startRawUpstream(t, answerEach(0))
	tp := startProxy(t, relayPolicy(up.port, false), nil)
	c, err := net.Dial("tcp", tp.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(relayTimeout))
	body := strings.Repeat("x", 4<<20)
	go func() {
		// Port 1 has no rule: denied. The body keeps coming after the 403.
		fmt.Fprintf(c, "POST http://127.0.0.1:1/upload HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: %d\r\n\r\n", len(body))
		_, _ = io.WriteString(c, body)
	}()
	// A client busy sending reads the answer only later: by then a proxy
	// that closed with unread bytes has reset the connection.
	time.Sleep(300 * time.Millisecond)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodPost})
	if err != nil {
		t.Fatalf("no readable answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), `"reason":"no_matching_rule"`) {
		t.Errorf("got %d %q, want the 403 denial", resp.StatusCode, b)
	}
	if !resp.Close {
		t.Error("the denial must say the connection closes")
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("upstream got %d requests", n)
	}
}

// TestForwardDenialReadableCurl: curl uploading a body that is denied
// reports the 403, not a send failure.
func TestForwardDenialReadableCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	tp := startProxy(t, relayPolicy(1, false), nil)
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		out, err := exec.Command(curl, "-sS", "-x", "http://"+tp.Addr, "--data-binary", "@"+file,
			"-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:2/upload").CombinedOutput()
		if err != nil || string(out) != "403" {
			t.Fatalf("try %d: curl: %v, output %q; want 403", i, err, out)
		}
	}
}

// TestHTTP10ClientChunkedUpstream: an HTTP/1.0 client cannot read chunked
// encoding; when the upstream answers chunked, the client gets the plain
// body ended by the close.
func TestHTTP10ClientChunkedUpstream(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		if _, err := u.readRequest(r); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	})
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect), nil)
			c := dialRaw(t, tp, path, up.port)
			c.write(fmt.Sprintf("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", c.uri("/"), c.target))
			raw, err := io.ReadAll(c.r)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			head, body, _ := strings.Cut(string(raw), "\r\n\r\n")
			if strings.Contains(strings.ToLower(head), "chunked") || body != "hello world" {
				t.Errorf("an HTTP/1.0 client got %q", raw)
			}
		})
	}
}

// TestForwardClientLeavesMidBody: a client that goes away in the middle of
// a long body ends the upstream connection too, at once, instead of the
// proxy reading the rest of the body for nobody.
func TestForwardClientLeavesMidBody(t *testing.T) {
	chunk := bytes.Repeat([]byte("z"), 32<<10)
	for _, tc := range []struct{ name, head string }{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"content_length", "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstreamDone := make(chan time.Time, 1)
			up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
				defer func() { upstreamDone <- time.Now() }()
				if _, err := u.readRequest(r); err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(relayTimeout))
				if _, err := io.WriteString(c, tc.head); err != nil {
					return
				}
				for {
					b := chunk
					if strings.Contains(tc.head, "chunked") {
						b = append(fmt.Appendf(nil, "%x\r\n", len(chunk)), append(chunk, "\r\n"...)...)
					}
					if _, err := c.Write(b); err != nil {
						return // the proxy closed the connection
					}
				}
			})
			tp := startProxy(t, relayPolicy(up.port, false), nil)
			c := dialRaw(t, tp, forwardPath, up.port)
			c.send(http.MethodGet, "/stream", nil, nil)
			resp := c.read(http.MethodGet)
			if _, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
				t.Fatal(err)
			}
			left := time.Now()
			c.conn.Close()
			select {
			case end := <-upstreamDone:
				if d := end.Sub(left); d > 2*time.Second {
					t.Errorf("the upstream connection ended %v after the client left", d)
				}
			case <-time.After(relayTimeout):
				t.Fatal("the upstream connection never ended")
			}
		})
	}
}

// TestForwardResponseFraming: an upstream whose Connection header names
// Content-Length as hop-by-hop cannot take the framing away: the client
// still gets a framed response, and its next request its own answer.
func TestForwardResponseFraming(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		for {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		}
	})
	tp := startProxy(t, relayPolicy(up.port, false), nil)
	c := dialRaw(t, tp, forwardPath, up.port)
	for _, path := range []string{"/a", "/bb"} {
		c.send(http.MethodGet, path, nil, nil)
		resp := c.read(http.MethodGet)
		if resp.ContentLength != int64(len(path)) {
			t.Errorf("%s: Content-Length %d, want %d", path, resp.ContentLength, len(path))
		}
		requireBody(t, resp, http.StatusOK, path)
	}
}

// TestForwardRefusalAfterKeepAlive: a refusal on a connection that
// carried an allowed request names neither that request's target nor the
// address its upstream connection used.
func TestForwardRefusalAfterKeepAlive(t *testing.T) {
	up := startRawUpstream(t, answerEach(0))
	tp := startProxy(t, relayPolicy(up.port, false), nil)
	cases := []struct{ name, raw, host string }{
		{"bad_head", "GET http://127.0.0.1:%d/x HTTP/1.1\r\nHost : a\r\n\r\n", ""},
		{"origin_form", "GET /x HTTP/1.1\r\nHost: other.example:8080\r\n\r\n", "other.example"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tp, forwardPath, up.port)
			c.send(http.MethodGet, "/ok", nil, nil)
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "/ok")
			raw := tc.raw
			if strings.Contains(raw, "%d") {
				raw = fmt.Sprintf(raw, up.port)
			}
			c.write(raw)
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			ev := tp.waitAudit(t, "the refusal", func(e audit.Event) bool {
				return e.Event == audit.EventRequest && e.Decision == audit.DecisionDeny && e.Reason == "bad_request" && e.Host == tc.host
			})
			if ev.Dst != "" || ev.Port == up.port {
				t.Errorf("refusal audited with port %d dst %q: those of the earlier request", ev.Port, ev.Dst)
			}
		})
	}
}

// failingListener fails its first fails Accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServeSurvivesAcceptErrors: running out of fds for a moment does not
// stop the proxy listener; once accept works again, so does the proxy.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	up := startRawUpstream(t, answerEach(0))
	pol, err := policies.Parse([]byte(relayPolicy(up.port, false)), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	al := audit.New(io.Discard, audit.Options{Sandbox: "test"})
	defer al.Close()
	p, err := New(Config{Policy: pol, Audit: al})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.fails.Store(5)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	defer func() {
		p.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	}()
	tp := &testProxy{Proxy: p, Addr: inner.Addr().String()}
	c := dialRaw(t, tp, forwardPath, up.port)
	c.send(http.MethodGet, "/after", nil, nil)
	requireBody(t, c.read(http.MethodGet), http.StatusOK, "/after")
	select {
	case err := <-served:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
}

// TestKeptConnectionRuleAddresses: a private address is allowed only for
// a rule that names it. A connection kept from a request such a rule
// allowed must not carry one that another rule allows: on the forward
// path it is not reused (the new dial is refused), in an inspected tunnel
// the request is refused.
func TestKeptConnectionRuleAddresses(t *testing.T) {
	up := startRawUpstream(t, answerEach(0))
	policy := fmt.Sprintf(`version: 1
allow:
  - name: names-the-address
    hosts: [%[1]s, 127.0.0.1/32]
    ports: [%[2]d]
    http:
      - methods: [GET]
        paths: [/a]
  - name: name-only
    hosts: [%[1]s]
    ports: [%[2]d]
    http:
      - methods: [GET]
        paths: [/b]
`, pinnedName, up.port)
	tp := startProxy(t, policy, func(c *Config) {
		c.Pins = map[string][]netip.Addr{pinnedName: {netip.MustParseAddr("127.0.0.1")}}
	})
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", tp.Addr, relayTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(relayTimeout))
			c := &rawClient{t: t, conn: conn.(*net.TCPConn), r: bufio.NewReader(conn),
				target: fmt.Sprintf("%s:%d", pinnedName, up.port), path: path}
			if path.connect {
				c.write(fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", c.target, c.target))
				if resp := c.read(http.MethodConnect); resp.StatusCode != http.StatusOK {
					t.Fatalf("CONNECT: %s", resp.Status)
				}
			}
			c.send(http.MethodGet, "/a", nil, nil)
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "/a")
			c.send(http.MethodGet, "/b", nil, nil)
			d := readDenial(t, c, http.MethodGet, http.StatusForbidden, string(policies.ReasonPrivateAddress))
			if d.Path != "/b" {
				t.Errorf("denial %+v, want one for /b", d)
			}
		})
	}
	for _, r := range up.requests() {
		if r.URL.Path == "/b" {
			t.Error("the upstream got /b over a connection its rule does not allow")
		}
	}
}

// TestSlowUploadNotCut: the idle limit counts from the last body bytes
// that moved, not from the start of the request: an upload that keeps
// moving for longer than IdleTunnelTimeout gets its answer.
func TestSlowUploadNotCut(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		req, err := u.readRequest(r)
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(strconv.Itoa(int(n))), strconv.Itoa(int(n)))
	})
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect), func(c *Config) {
				c.Limits.IdleTunnelTimeout = time.Second
			})
			c := dialRaw(t, tp, path, up.port)
			const size = 25 // one byte every 100 ms: 2.5 s, more than twice the limit
			c.send(http.MethodPost, "/up", []string{fmt.Sprintf("Content-Length: %d", size)}, nil)
			for range size {
				c.write("x")
				time.Sleep(100 * time.Millisecond)
			}
			requireBody(t, c.read(http.MethodPost), http.StatusOK, strconv.Itoa(size))
			ev := tp.waitAudit(t, "the upload", func(e audit.Event) bool { return e.Event == audit.EventRequest })
			if ev.Decision != audit.DecisionAllow || ev.Status != http.StatusOK {
				t.Errorf("request event %+v", ev)
			}
		})
	}
}

// TestCutResponseNotAnsweredTwice: an upstream that begins a response on
// a kept connection and then closes it mid-body cuts that response. The
// client never gets a second status line after a head that went out (a
// head larger than the proxy's write buffer goes out in part), and a GET
// is not sent again once the upstream has begun to answer (a small head
// that was held back becomes a 502 instead).
func TestCutResponseNotAnsweredTwice(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		status      int // what the client gets
	}{
		{"small_head", "", http.StatusBadGateway},
		{"head_over_write_buffer", "X-Big: " + strings.Repeat("b", 5<<10) + "\r\n", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
				for {
					req, err := u.readRequest(r)
					if err != nil {
						return
					}
					if req.URL.Path == "/ok" {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n"+tc.extra+"Content-Length: 100\r\n\r\nabc")
					c.Close()
					return
				}
			})
			tp := startProxy(t, relayPolicy(up.port, false), nil)
			c := dialRaw(t, tp, forwardPath, up.port)
			c.send(http.MethodGet, "/ok", nil, nil)
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "ok")
			c.send(http.MethodGet, "/cut", nil, nil) // on the kept connection
			raw, _ := io.ReadAll(c.r)
			if n := strings.Count(string(raw), "HTTP/1.1 "); n != 1 || !strings.HasPrefix(string(raw), fmt.Sprintf("HTTP/1.1 %d ", tc.status)) {
				t.Errorf("the client got %d status lines, want one %d: %.120q", n, tc.status, raw)
			}
			cuts := 0
			for _, r := range up.requests() {
				if r.URL.Path == "/cut" {
					cuts++
				}
			}
			if cuts != 1 {
				t.Errorf("the upstream got /cut %d times, want once", cuts)
			}
		})
	}
}
