package proxy

// The 101 switch against raw upstreams that misbehave on purpose (DESIGN
// 2.4): overflow both ways, unsolicited and mismatched 101s, a non-WebSocket
// protocol relayed byte for byte, and half-close in each direction.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

const switchHead = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"

// upgradePaths are the paths an upgrade can take: the proxy's own switch on
// the forward path (with and without http rules) and in an inspected
// CONNECT, and a blind tunnel that carries the switch untouched.
var upgradePaths = []relayPath{forwardPath, forwardAnyPath, inspectedPath, blindPath}

// TestRelayUpstreamOverflow: the upstream writes its 101 head and a frame
// in one write; the frame reaches the client right after the 101 head.
func TestRelayUpstreamOverflow(t *testing.T) {
	frame := []byte{0x82, 0x05, 'h', 'e', 'l', 'l', 'o'} // a binary WebSocket frame
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		if _, err := u.readRequest(r); err != nil {
			return
		}
		_, _ = c.Write(append(fmt.Appendf(nil, switchHead, "websocket"), frame...))
		_, _ = io.Copy(io.Discard, r)
	})
	for _, path := range upgradePaths {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "websocket"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.upgrade("websocket")
			if got := c.readFull(len(frame)); !bytes.Equal(got, frame) {
				t.Fatalf("after the 101 head: %q, want the frame %q", got, frame)
			}
			if c.r.Buffered() > 0 {
				t.Errorf("%d unexpected bytes after the frame", c.r.Buffered())
			}
			c.conn.Close()
			if path == blindPath {
				return
			}
			_, upg, _ := tp.upgradeEvents(t)
			if upg.OverflowBytes != int64(len(frame)) {
				t.Errorf("upgrade overflow_bytes = %d, want %d", upg.OverflowBytes, len(frame))
			}
		})
	}
}

// TestRelayClientOverflow: the client writes its upgrade request and its
// first bytes in one write; the upstream gets them after the request head,
// and only once it has switched.
func TestRelayClientOverflow(t *testing.T) {
	extra := []byte("early bytes the client sent with its request")
	got := make(chan string, 1)
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		if _, err := u.readRequest(r); err != nil {
			return
		}
		// Nothing may follow the request head before the switch: it would
		// be read as the next request.
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := r.Peek(1); err == nil {
			got <- fmt.Sprintf("%d bytes before the 101", r.Buffered())
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(relayTimeout))
		fmt.Fprintf(c, switchHead, "example-echo/1")
		b := make([]byte, len(extra))
		_, err := io.ReadFull(r, b)
		got <- fmt.Sprintf("%s %v", b, err)
		_, _ = io.Copy(io.Discard, r)
	})
	// Not the blind tunnel: it passes every byte on as it comes.
	for _, path := range []relayPath{forwardPath, forwardAnyPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.send(http.MethodGet, "/up", []string{"Connection: Upgrade", "Upgrade: example-echo/1"}, extra)
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("got %s, want 101", resp.Status)
			}
			select {
			case s := <-got:
				if want := string(extra) + " <nil>"; s != want {
					t.Fatalf("upstream read %s, want %q", s, want)
				}
			case <-time.After(relayTimeout):
				t.Fatal("upstream never got the client's early bytes")
			}
			c.conn.Close()
			// overflow_bytes counts the overflow forwarded either way.
			if _, upg, _ := tp.upgradeEvents(t); upg.OverflowBytes != int64(len(extra)) {
				t.Errorf("upgrade overflow_bytes = %d, want %d", upg.OverflowBytes, len(extra))
			}
		})
	}
}

// refusedSwitch is a 101 the proxy must not pass on: the client gets no
// 101, both connections close, and the request is audited as denied.
type refusedSwitch struct {
	name    string
	path    relayPath
	headers []string // the client's request headers
	head    string   // the upstream's answer
	silent  bool     // the upstream sends nothing after head
	reason  string
}

func testRefusedSwitch(t *testing.T, tc refusedSwitch) {
	upstreamDone := make(chan struct{})
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		defer close(upstreamDone)
		if _, err := u.readRequest(r); err != nil {
			return
		}
		after := "bytes of the new protocol"
		if tc.silent {
			after = ""
		}
		_, _ = io.WriteString(c, tc.head+after)
		_, _ = io.Copy(io.Discard, r) // until the proxy closes
	})
	tp := startProxy(t, relayPolicy(up.port, tc.path.inspect, "websocket"), nil)
	c := dialRaw(t, tp, tc.path, up.port)
	c.send(http.MethodGet, "/x", tc.headers, nil)
	if got := c.drain(3 * time.Second); bytes.Contains(got, []byte(" 101 ")) || bytes.Contains(got, []byte("new protocol")) {
		t.Errorf("the client got %q", got)
	}
	select {
	case <-upstreamDone:
	case <-time.After(3 * time.Second):
		t.Errorf("the upstream connection is still open")
	}
	ev := tp.waitAudit(t, "request", func(e audit.Event) bool { return e.Event == audit.EventRequest })
	if ev.Decision != audit.DecisionDeny || ev.Reason != tc.reason || ev.Status != 0 {
		t.Errorf("request event: decision %s reason %s status %d; want deny %s 0",
			ev.Decision, ev.Reason, ev.Status, tc.reason)
	}
	if n := len(eventsOf(tp.events(t), audit.EventUpgrade)); n != 0 {
		t.Errorf("%d upgrade events for a refused 101", n)
	}
}

func TestRelayUnsolicitedUpgrade(t *testing.T) {
	ws := fmt.Sprintf(switchHead, "websocket")
	bare := "HTTP/1.1 101 Switching Protocols\r\n\r\n"
	noToken := []string{"Upgrade: websocket"} // Upgrade without the Connection token asks for nothing
	for _, tc := range []refusedSwitch{
		{name: "forward/plain_get", path: forwardPath, head: ws},
		{name: "forward/bare_101", path: forwardPath, head: bare},
		{name: "forward/bare_101_then_silence", path: forwardPath, head: bare, silent: true},
		{name: "forward/then_silence", path: forwardPath, head: ws, silent: true},
		{name: "forward/upgrade_without_connection_token", path: forwardPath, headers: noToken, head: ws},
		{name: "inspected/plain_get", path: inspectedPath, head: ws},
		{name: "inspected/bare_101", path: inspectedPath, head: bare},
		{name: "inspected/bare_101_then_silence", path: inspectedPath, head: bare, silent: true},
		{name: "inspected/upgrade_without_connection_token", path: inspectedPath, headers: noToken, head: ws},
	} {
		tc.reason = "unsolicited_upgrade"
		t.Run(tc.name, func(t *testing.T) { testRefusedSwitch(t, tc) })
	}
}

func TestRelayUpgradeMismatch(t *testing.T) {
	asks := []string{"Connection: Upgrade", "Upgrade: websocket"}
	heads := []struct{ name, head string }{
		{"h2c", fmt.Sprintf(switchHead, "h2c")},
		{"no_upgrade_header", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"},
		{"websocket_prefix", fmt.Sprintf(switchHead, "websocketx")},
		{"two_protocols", fmt.Sprintf(switchHead, "websocket, h2c")},
	}
	for _, path := range []relayPath{forwardPath, forwardAnyPath, inspectedPath} {
		for _, h := range heads {
			tc := refusedSwitch{name: path.name + "/" + h.name, path: path, headers: asks, head: h.head,
				reason: "upgrade_mismatch"}
			t.Run(tc.name, func(t *testing.T) { testRefusedSwitch(t, tc) })
		}
	}
}

// TestRelayUpgradeCaseInsensitive: a 101 naming the asked protocol in
// other letter case is the same protocol.
func TestRelayUpgradeCaseInsensitive(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		if _, err := u.readRequest(r); err == nil {
			fmt.Fprintf(c, switchHead, "WebSocket")
			_, _ = io.Copy(c, r)
		}
	})
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "websocket"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.upgrade("websocket")
			c.write("ping")
			if got := c.readFull(4); string(got) != "ping" {
				t.Fatalf("echo %q", got)
			}
		})
	}
}

// TestRelayNonWebSocketUpgrade: another protocol, relayed byte for byte,
// 256 KiB of random bytes each way at once.
func TestRelayNonWebSocketUpgrade(t *testing.T) {
	up := startRawUpstream(t, echoUpstream)
	data := randomBytes(t, 256<<10)
	for _, path := range upgradePaths {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.upgrade("example-echo/1")
			wrote := make(chan error, 1)
			go func() {
				_, err := c.conn.Write(data)
				if err == nil {
					err = c.conn.CloseWrite()
				}
				wrote <- err
			}()
			got, err := io.ReadAll(c.r)
			if err != nil {
				t.Fatalf("read: %v after %d bytes", err, len(got))
			}
			if err := <-wrote; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("echo differs: got %d bytes, sent %d; first difference at %d", len(got), len(data), firstDiff(got, data))
			}
			if path == blindPath {
				return
			}
			req, _, cls := tp.upgradeEvents(t)
			if req.Upgrade != "example-echo/1" || req.Status != http.StatusSwitchingProtocols {
				t.Errorf("request event: %+v", req)
			}
			// An inspected tunnel counts its HTTP heads too.
			n := int64(len(data))
			if cls.BytesUp < n || cls.BytesDown < n || cls.BytesUp > n+1024 || cls.BytesDown > n+1024 {
				t.Errorf("close event: bytes_up %d bytes_down %d, want %d each (plus heads)", cls.BytesUp, cls.BytesDown, n)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRelayHalfClose: after the 101, one side ends its sending and the
// other still answers, in each direction.
func TestRelayHalfClose(t *testing.T) {
	heard := make(chan string, 1)
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		req, err := u.readRequest(r)
		if err != nil {
			return
		}
		fmt.Fprintf(c, switchHead, "example-echo/1")
		if req.URL.Path == "/upstream-first" {
			_, _ = io.WriteString(c, "the upstream is done sending")
			_ = c.CloseWrite()
			b, err := io.ReadAll(r)
			heard <- fmt.Sprintf("%s %v", b, err)
			return
		}
		n, _ := io.Copy(io.Discard, r)
		fmt.Fprintf(c, "read %d bytes to EOF", n)
	})
	for _, path := range upgradePaths {
		t.Run(path.name+"/client_first", func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.upgrade("example-echo/1")
			c.write(strings.Repeat("x", 1000))
			if err := c.conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got := c.drain(3 * time.Second); string(got) != "read 1000 bytes to EOF" {
				t.Fatalf("answer after CloseWrite: %q", got)
			}
		})
		t.Run(path.name+"/upstream_first", func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "example-echo/1"), nil)
			c := dialRaw(t, tp, path, up.port)
			c.send(http.MethodGet, "/upstream-first", []string{"Connection: Upgrade", "Upgrade: example-echo/1"}, nil)
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("got %s", resp.Status)
			}
			_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if got, err := io.ReadAll(c.r); err != nil || string(got) != "the upstream is done sending" {
				t.Fatalf("read to EOF: %q %v", got, err)
			}
			c.write("the client's answer")
			if err := c.conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			select {
			case s := <-heard:
				if s != "the client's answer <nil>" {
					t.Fatalf("upstream heard %s", s)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the upstream never saw the client's answer and EOF")
			}
		})
	}
}
