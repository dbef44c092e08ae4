package proxy

// Edges of the switch beyond the misbehaving upstreams: bytes pipelined
// behind a CONNECT, overflow larger than a read buffer, an upgrade the
// upstream declines, and a proxy closed under live upgrades.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// TestRelayConnectPipelined: CONNECT, the upgrade request and the first
// bytes of the new protocol in one write; none of it is lost.
func TestRelayConnectPipelined(t *testing.T) {
	up := startRawUpstream(t, echoUpstream)
	for _, path := range []relayPath{inspectedPath, blindPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, relayPath{}, up.port) // the CONNECT goes in the same write
			c.path = path
			c.write(fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n"+
				"GET /up HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: example-echo/1\r\n\r\nearly bytes",
				c.target, c.target, c.target))
			if resp := c.read(http.MethodConnect); resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT: %s", resp.Status)
			}
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %s", resp.Status)
			}
			if got := c.readFull(len("early bytes")); string(got) != "early bytes" {
				t.Fatalf("echo %q", got)
			}
		})
	}
}

// TestRelayLargeOverflow: overflow well past the relay's read buffers, in
// one write from either side, arrives whole and in order.
func TestRelayLargeOverflow(t *testing.T) {
	big := randomBytes(t, 100<<10)
	upstreamSends := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		if _, err := u.readRequest(r); err == nil {
			_, _ = c.Write(append(fmt.Appendf(nil, switchHead, "example-echo/1"), big...))
			_, _ = io.Copy(io.Discard, r)
		}
	})
	echo := startRawUpstream(t, echoUpstream)
	for _, path := range []relayPath{forwardPath, inspectedPath, blindPath} {
		t.Run(path.name+"/from_upstream", func(t *testing.T) {
			tp := startProxy(t, relayPolicy(upstreamSends.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, path, upstreamSends.port)
			c.upgrade("example-echo/1")
			if got := c.readFull(len(big)); !bytes.Equal(got, big) {
				t.Fatalf("overflow differs at byte %d", firstDiff(got, big))
			}
		})
		t.Run(path.name+"/from_client", func(t *testing.T) {
			tp := startProxy(t, relayPolicy(echo.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, path, echo.port)
			head := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: example-echo/1\r\n\r\n",
				c.uri("/up"), c.target)
			sent := make(chan error, 1)
			go func() {
				_, err := c.conn.Write(append([]byte(head), big...))
				sent <- err
			}()
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("got %s", resp.Status)
			}
			if got := c.readFull(len(big)); !bytes.Equal(got, big) {
				t.Fatalf("echo differs at byte %d", firstDiff(got, big))
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRelayUpgradeDeclined: an upstream may answer an upgrade request with
// an ordinary response. The client gets it, and the connection carries on
// with the next request (forward path and inspected CONNECT alike).
func TestRelayUpgradeDeclined(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		for {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			if req.Header.Get("Upgrade") != "" {
				_, _ = io.WriteString(c, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 11\r\n\r\nno upgrades")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "websocket"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.send(http.MethodGet, "/ws", []string{"Connection: Upgrade", "Upgrade: websocket"}, nil)
			resp := c.read(http.MethodGet)
			requireBody(t, resp, http.StatusUpgradeRequired, "no upgrades")
			if resp.Close {
				t.Error("response has Connection: close; the connection can carry on")
			}
			ev := tp.waitAudit(t, "request", func(e audit.Event) bool { return e.Event == audit.EventRequest })
			if ev.Decision != audit.DecisionAllow || ev.Status != http.StatusUpgradeRequired || ev.Upgrade != "websocket" {
				t.Errorf("request event: %+v", ev)
			}
			c.send(http.MethodGet, "/plain", nil, nil)
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "ok")
			if n := len(eventsOf(tp.events(t), audit.EventUpgrade)); n != 0 {
				t.Errorf("%d upgrade events, want none", n)
			}
		})
	}
}

// TestRelayProxyCloseEndsUpgrades: Close ends every live upgrade and
// tunnel, returns promptly, and each is audited as closed.
func TestRelayProxyCloseEndsUpgrades(t *testing.T) {
	up := startRawUpstream(t, echoUpstream)
	tp := startProxy(t, relayPolicy(up.port, true, "example-echo/1"), nil)
	blind := startProxy(t, relayPolicy(up.port, false), nil)
	var clients []*rawClient
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		c := dialRaw(t, tp, path, up.port)
		c.upgrade("example-echo/1")
		echoOnce(t, c)
		clients = append(clients, c)
	}
	c := dialRaw(t, blind, blindPath, up.port)
	c.upgrade("example-echo/1")
	echoOnce(t, c)
	clients = append(clients, c)

	for _, p := range []*testProxy{tp, blind} {
		closed := make(chan error, 1)
		go func() { closed <- p.Close() }()
		select {
		case <-closed:
		case <-time.After(3 * time.Second):
			t.Fatal("Close did not return with upgrades live")
		}
	}
	for _, c := range clients {
		c.drain(3 * time.Second)
	}
	deadline := time.Now().Add(3 * time.Second)
	for up.open() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := up.open(); n != 0 {
		t.Errorf("%d upstream connections still open", n)
	}
	for _, p := range []*testProxy{tp, blind} {
		p.waitAudit(t, "close", func(e audit.Event) bool { return e.Event == audit.EventClose })
	}
	if n := len(eventsOf(tp.events(t), audit.EventClose)); n != 2 {
		t.Errorf("%d close events for the 2 upgrades, want 2", n)
	}
}

// TestRelayBodyStall: an upstream that sends a response head and part of
// its body, then nothing, must not hold the client and the upstream
// connection forever: the body's idle limit (IdleTunnelTimeout) ends the
// exchange, on the small-body, copied and spliced ways alike, and the
// request is audited with the status the client got: a small body is sent
// with its head, so its client gets a 502 instead of half a response.
func TestRelayBodyStall(t *testing.T) {
	cases := []struct {
		name      string
		length    int
		sent      int
		transfers string
		status    int
	}{
		{"small_body", 100, 10, "", http.StatusBadGateway},
		{"large_body", 4 << 20, 300 << 10, "", http.StatusOK},
		{"chunked", 0, 300 << 10, "chunked", http.StatusOK},
	}
	for _, tc := range cases {
		up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
			if _, err := u.readRequest(r); err != nil {
				return
			}
			head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", tc.length)
			body := bytes.Repeat([]byte("s"), tc.sent)
			if tc.transfers == "chunked" {
				head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				body = append(fmt.Appendf(nil, "%x\r\n", tc.sent), body...)
			}
			_, _ = c.Write(append([]byte(head), body...))
			_, _ = io.Copy(io.Discard, r) // then silence, until the proxy gives up
		})
		for _, path := range []relayPath{forwardPath, inspectedPath} {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				tp := startProxy(t, relayPolicy(up.port, path.inspect), func(c *Config) {
					c.Limits.IdleTunnelTimeout = time.Second
				})
				c := dialRaw(t, tp, path, up.port)
				c.send(http.MethodGet, "/stall", nil, nil)
				start := time.Now()
				resp := c.read(http.MethodGet)
				n, err := io.Copy(io.Discard, resp.Body)
				switch {
				case resp.StatusCode != tc.status:
					t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
				case tc.status == http.StatusOK && (err == nil || n < int64(tc.sent)):
					t.Errorf("body: %d bytes, err %v; want the %d bytes sent, then a cut", n, err, tc.sent)
				}
				if d := time.Since(start); d > 4*time.Second {
					t.Errorf("the end came after %v, want about the 1 s idle limit", d)
				}
				ev := tp.waitAudit(t, "request", func(e audit.Event) bool { return e.Event == audit.EventRequest })
				if ev.Status != tc.status || ev.Path != "/stall" {
					t.Errorf("request event %+v", ev)
				}
			})
		}
	}
}
