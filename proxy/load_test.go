package proxy

// Load and faults at the proxy level: 10,000 requests from 200 concurrent
// clients with exactly one audit event each, an upstream killed in the
// middle of a WebSocket, and a proxy closed while requests are in flight.
// Goroutines and fds must be back at their baseline afterwards.

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/osandbox/osandbox/audit"
)

// loadPolicy inspects 127.0.0.1:port: GET anywhere, except below /deny,
// which a deny rule refuses.
func loadPolicy(port int) string {
	return fmt.Sprintf(`version: 1
allow:
  - name: load
    hosts: [127.0.0.1]
    ports: [%[1]d]
    http:
      - methods: [GET]
        paths: ["/**"]
deny:
  - name: no-deny
    hosts: [127.0.0.1]
    ports: [%[1]d]
    http:
      - methods: ["*"]
        paths: ["/deny/**"]
`, port)
}

// TestLoad: 200 concurrent keep-alive clients, half on the forward path and
// half through inspected CONNECT tunnels, send 10,000 requests, one in ten
// to a path a deny rule refuses. None fails, the upstream sees exactly the
// allowed ones, and the audit log has exactly one request event per
// request, with its decision and status.
func TestLoad(t *testing.T) {
	const clients, perClient = 200, 50
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	port, _ := strconv.Atoi(u.Port())
	tp := startProxy(t, loadPolicy(port), nil)
	check := leakCheck(t, tp)

	start := time.Now()
	var wg sync.WaitGroup
	var failures atomic.Int64
	transports := make([]*http.Transport, clients)
	for i := range clients {
		tr := &http.Transport{Proxy: http.ProxyURL(tp.URL), MaxIdleConnsPerHost: 1, DisableCompression: true}
		if i%2 == 1 {
			tr = &http.Transport{DialContext: loadTunnelDial(tp), MaxIdleConnsPerHost: 1, DisableCompression: true}
		}
		transports[i] = tr
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: tr, Timeout: loadTimeout}
			for n := range perClient {
				path, want := fmt.Sprintf("/load/%d/%d", i, n), http.StatusOK
				if n%10 == 9 {
					path, want = fmt.Sprintf("/deny/%d/%d", i, n), http.StatusForbidden
				}
				resp, err := client.Get(up.URL + path)
				if err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("client %d request %d: %v", i, n, err)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					if failures.Add(1) <= 5 {
						t.Errorf("client %d %s: status %d, want %d", i, path, resp.StatusCode, want)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests from %d clients in %v", clients*perClient, clients, time.Since(start))
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed", n, clients*perClient)
	}
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}

	const total, denied = clients * perClient, clients * perClient / 10
	if n := hits.Load(); n != total-denied {
		t.Errorf("upstream got %d requests, want %d", n, total-denied)
	}
	reqs := eventsOf(tp.events(t), audit.EventRequest)
	if len(reqs) != total {
		t.Errorf("%d request events for %d requests", len(reqs), total)
	}
	perPath := map[string]int{}
	var allows, denies int
	for _, e := range reqs {
		perPath[e.Path]++
		switch {
		case e.Decision == audit.DecisionAllow && e.Status == http.StatusOK && e.Rule == "load":
			allows++
		case e.Decision == audit.DecisionDeny && e.Status == http.StatusForbidden && e.Reason == "rule_deny":
			denies++
		default:
			t.Errorf("unexpected request event %+v", e)
		}
	}
	if allows != total-denied || denies != denied {
		t.Errorf("%d allows and %d denies, want %d and %d", allows, denies, total-denied, denied)
	}
	for p, n := range perPath {
		if n != 1 {
			t.Errorf("path %s audited %d times", p, n)
		}
	}
	check()
}

// loadTimeout bounds each request of the load test: generous, since a
// machine running -race and other suites at once is slow, but a hang
// still fails.
const loadTimeout = time.Minute

// loadTunnelDial reaches every address through a CONNECT to tp, as
// tunnelTransport does, with loadTimeout for the CONNECT's answer.
func loadTunnelDial(tp *testProxy) func(ctx context.Context, _, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", tp.Addr)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(loadTimeout))
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("CONNECT %s: %s", addr, resp.Status)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		_ = c.SetDeadline(time.Time{})
		return &tunnelConn{Conn: c, r: br}, nil
	}
}

// wsAccept is the Sec-WebSocket-Accept for key (RFC 6455 4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsHelloThenDie completes a WebSocket handshake, sends one text message,
// and when kill closes resets the connection: the upstream process dying
// mid-session.
func wsHelloThenDie(kill <-chan struct{}) upstreamHandler {
	return func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		req, err := u.readRequest(r)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Accept: %s\r\n\r\n", wsAccept(req.Header.Get("Sec-WebSocket-Key")))
		c.Write([]byte{0x81, 5, 'h', 'e', 'l', 'l', 'o'})
		<-kill
		c.SetLinger(0)
		c.Close()
	}
}

// TestUpstreamKilledMidWebSocket: on the forward, inspected and blind
// paths, a WebSocket whose upstream dies mid-session ends at the client
// too (its next read fails at once, no hang), and the audit log has the
// close event of the connection, with the bytes that went down.
func TestUpstreamKilledMidWebSocket(t *testing.T) {
	for _, path := range []relayPath{forwardPath, inspectedPath, blindPath} {
		t.Run(path.name, func(t *testing.T) {
			kill := make(chan struct{})
			up := startRawUpstream(t, wsHelloThenDie(kill))
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "websocket"), nil)
			check := leakCheck(t, tp)
			ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
			defer cancel()
			c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/ws", up.port),
				&websocket.DialOptions{HTTPClient: wsClient(tp, path)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if _, b, err := c.Read(ctx); err != nil || string(b) != "hello" {
				t.Fatalf("first message: %q, %v", b, err)
			}
			close(kill)
			begin := time.Now()
			_, _, err = c.Read(ctx)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("read after the upstream died: %v (context: %v)", err, ctx.Err())
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Errorf("the client saw the end %v after the upstream died", d)
			}
			var connID uint64
			if path.connect && !path.inspect {
				connID = tp.waitAudit(t, "connect", func(e audit.Event) bool {
					return e.Event == audit.EventConnect && e.Decision == audit.DecisionAllow
				}).Conn
			} else {
				req, _, _ := tp.upgradeEvents(t)
				connID = req.Conn
			}
			cls := tp.waitAudit(t, "close", func(e audit.Event) bool {
				return e.Event == audit.EventClose && e.Conn == connID
			})
			if cls.BytesDown < 7 {
				t.Errorf("close has bytes_down %d, want at least the 7 bytes of the message", cls.BytesDown)
			}
			c.CloseNow()
			check()
		})
	}
}

// TestCloseWaitsForInFlightRequests: Close returns only once every request
// it cut short has been audited, so the last event the log gets is
// written before Close returns (osandbox writes its exit event then). On
// every path a request is in flight, its upstream slow to answer, when
// Close is called; nothing reaches the audit log after Close returns.
func TestCloseWaitsForInFlightRequests(t *testing.T) {
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			for i := range 10 { // the window is small: try it often
				got := make(chan struct{}, 1)
				up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
					if _, err := u.readRequest(r); err != nil {
						return
					}
					got <- struct{}{}
					time.Sleep(100 * time.Millisecond)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				})
				tp := startProxy(t, relayPolicy(up.port, path.inspect), nil)
				c := dialRaw(t, tp, path, up.port)
				c.send(http.MethodGet, fmt.Sprintf("/inflight/%d", i), nil, nil)
				select {
				case <-got:
				case <-time.After(relayTimeout):
					t.Fatal("the upstream never got the request")
				}
				tp.Close()
				if err := tp.log.Flush(); err != nil {
					t.Fatal(err)
				}
				atClose := len(tp.audit.Bytes())
				time.Sleep(200 * time.Millisecond)
				if err := tp.log.Flush(); err != nil {
					t.Fatal(err)
				}
				if after := tp.audit.Bytes(); len(after) != atClose {
					t.Fatalf("attempt %d: after Close returned the audit log grew by %q", i, after[atClose:])
				}
			}
		})
	}
}

// TestConnectionLimit: DESIGN 2.6 bounds a run to 4096 connections, so a
// command cannot exhaust osandbox's fds. With 4096 client connections
// open (each in the middle of a request head), one more is not served.
func TestConnectionLimit(t *testing.T) {
	const limit = 4096
	up := startRawUpstream(t, echoUpstream)
	tp := startProxy(t, relayPolicy(up.port, false), func(c *Config) {
		c.Limits.HeaderTimeout = time.Minute
		c.Limits.MaxConns = limit
	})
	conns := make([]net.Conn, 0, limit)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range limit {
		c, err := net.DialTimeout("tcp", tp.Addr, relayTimeout)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, "GET http://127.0.0.1/ HTTP/1.1\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	c, err := net.DialTimeout("tcp", tp.Addr, relayTimeout)
	if err != nil {
		return // refused at once: within the limit
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(relayTimeout))
	fmt.Fprintf(c, "GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1:%[1]d\r\n\r\n", up.port)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("connection %d was served: no limit on concurrent connections", limit+1)
	}
}
