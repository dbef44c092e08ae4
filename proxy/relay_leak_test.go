package proxy

// Nothing outlives a relayed connection: goroutines and fds return to
// their baseline once every upgrade and tunnel has closed, and an idle
// one is ended by IdleTunnelTimeout.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds: %v", err)
	}
	return len(ents)
}

// leakUpstream answers by path: /mismatch with a 101 for another protocol,
// /hangup with a 101 and an immediate close, anything else as
// echoUpstream does.
func leakUpstream(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
	req, err := u.readRequest(r)
	if err != nil {
		return
	}
	switch req.URL.Path {
	case "/mismatch":
		fmt.Fprintf(c, switchHead, "h2c")
		_, _ = io.Copy(io.Discard, r)
	case "/hangup":
		fmt.Fprintf(c, switchHead, req.Header.Get("Upgrade"))
	default:
		fmt.Fprintf(c, switchHead, req.Header.Get("Upgrade"))
		_, _ = io.Copy(c, r)
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, r)
	}
}

// TestRelayNoLeaks opens a batch of upgrades and tunnels that end every
// way they can, closes them all, and requires goroutine and fd counts back
// at their baseline.
func TestRelayNoLeaks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts fds in /proc/self/fd")
	}
	up := startRawUpstream(t, leakUpstream)
	inspected := startProxy(t, relayPolicy(up.port, true, "example-echo/1"), nil)
	blind := startProxy(t, relayPolicy(up.port, false), nil)
	const perKind = 20
	kinds := []struct {
		name string
		run  func(t *testing.T) *rawClient // leaves the client open when it can
	}{
		{"forward_client_closes", func(t *testing.T) *rawClient {
			c := dialRaw(t, inspected, forwardPath, up.port)
			c.upgrade("example-echo/1")
			echoOnce(t, c)
			return c
		}},
		{"forward_half_close", func(t *testing.T) *rawClient {
			c := dialRaw(t, inspected, forwardPath, up.port)
			c.upgrade("example-echo/1")
			c.write("bye")
			_ = c.conn.CloseWrite()
			if got := c.drain(3 * time.Second); string(got) != "bye" {
				t.Errorf("echo before EOF: %q", got)
			}
			return c
		}},
		{"inspected_client_closes", func(t *testing.T) *rawClient {
			c := dialRaw(t, inspected, inspectedPath, up.port)
			c.upgrade("example-echo/1")
			echoOnce(t, c)
			return c
		}},
		{"upstream_hangs_up", func(t *testing.T) *rawClient {
			c := dialRaw(t, inspected, inspectedPath, up.port)
			c.send(http.MethodGet, "/hangup", []string{"Connection: Upgrade", "Upgrade: example-echo/1"}, nil)
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
				t.Errorf("got %s", resp.Status)
			}
			c.drain(3 * time.Second)
			return c
		}},
		{"mismatched_101", func(t *testing.T) *rawClient {
			c := dialRaw(t, inspected, forwardPath, up.port)
			c.send(http.MethodGet, "/mismatch", []string{"Connection: Upgrade", "Upgrade: example-echo/1"}, nil)
			c.drain(3 * time.Second)
			return c
		}},
		{"upgrade_denied", func(t *testing.T) *rawClient {
			c := dialRaw(t, inspected, inspectedPath, up.port)
			c.send(http.MethodGet, "/", []string{"Connection: Upgrade", "Upgrade: websocket"}, nil)
			if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusForbidden {
				t.Errorf("got %s", resp.Status)
			}
			return c
		}},
		{"blind_tunnel", func(t *testing.T) *rawClient {
			c := dialRaw(t, blind, blindPath, up.port)
			c.upgrade("example-echo/1")
			echoOnce(t, c)
			return c
		}},
	}
	batch := func() {
		var open []*rawClient
		for _, k := range kinds {
			for range perKind {
				open = append(open, k.run(t))
			}
		}
		for _, c := range open {
			c.conn.Close()
		}
	}
	settled := func(g0, fd0 int) (int, int, bool) {
		var g, fd int
		for deadline := time.Now().Add(5 * time.Second); ; {
			releaseSplicePipes()
			g, fd = runtime.NumGoroutine(), openFDs(t)
			if g <= g0 && fd <= fd0 {
				return g, fd, true
			}
			if time.Now().After(deadline) {
				return g, fd, false
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	batch() // warm up whatever the runtime and net/http start lazily
	if t.Failed() {
		t.FailNow()
	}
	// The baseline is the count once the warm-up batch has wound down.
	releaseSplicePipes()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		g, fd, _ := settled(g0, fd0)
		if g == g0 && fd == fd0 {
			break
		}
		g0, fd0 = g, fd
	}
	batch()
	const slack = 2
	if g, fd, ok := settled(g0+slack, fd0+slack); !ok {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Logf("goroutines:\n%s", relayStacks(buf))
		t.Fatalf("after %d connections closed: %d goroutines (baseline %d), %d fds (baseline %d)",
			perKind*len(kinds), g, g0, fd, fd0)
	}
	if n := up.open(); n != 0 {
		t.Errorf("%d upstream connections still open", n)
	}
}

// relayStacks keeps the goroutine dumps that involve this package.
func relayStacks(all []byte) string {
	var keep []string
	for _, g := range strings.Split(string(all), "\n\n") {
		if strings.Contains(g, "osandbox/proxy.") && !strings.Contains(g, "testing.tRunner") {
			keep = append(keep, g)
		}
	}
	return strings.Join(keep, "\n\n")
}

func echoOnce(t *testing.T, c *rawClient) {
	t.Helper()
	c.write("ping")
	if got := c.readFull(4); string(got) != "ping" {
		t.Errorf("echo %q", got)
	}
}

// TestRelayIdleTimeout: an upgrade or tunnel that moves data stays up; one
// left idle is closed at both ends within about IdleTunnelTimeout, and the
// close is audited.
func TestRelayIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	for _, path := range []relayPath{forwardPath, inspectedPath, blindPath} {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			upstreamEnded := make(chan time.Time, 1)
			up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
				req, err := u.readRequest(r)
				if err != nil {
					return
				}
				fmt.Fprintf(c, switchHead, req.Header.Get("Upgrade"))
				_, _ = io.Copy(c, r) // ends when the proxy closes its side
				upstreamEnded <- time.Now()
			})
			tp := startProxy(t, relayPolicy(up.port, path.inspect, "example-echo/1"), func(cfg *Config) {
				cfg.Limits.IdleTunnelTimeout = idle
			})
			c := dialRaw(t, tp, path, up.port)
			c.upgrade("example-echo/1")
			// Busy for three idle periods: it must stay up.
			for end := time.Now().Add(3 * idle); ; time.Sleep(idle / 3) {
				echoOnce(t, c)
				if time.Now().After(end) {
					break
				}
			}
			quiet := time.Now()
			if rest := c.drain(2 * time.Second); len(rest) > 0 {
				t.Errorf("read %q while idle", rest)
			}
			// The proxy's sockets went quiet a moment before the client saw the
			// last echo, and the kernel counts in jiffies: allow some early.
			if took := time.Since(quiet); took < idle*3/4 {
				t.Errorf("closed after %v of quiet, before the idle timeout %v", took, idle)
			}
			select {
			case at := <-upstreamEnded:
				if took := at.Sub(quiet); took > 2*time.Second {
					t.Errorf("upstream closed after %v", took)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the upstream connection is still open")
			}
			tp.waitAudit(t, "close", func(e audit.Event) bool { return e.Event == audit.EventClose })
		})
	}
}

// releaseSplicePipes lets the runtime close the splice pipes it pools
// (a sync.Pool with finalizers): two collections empty the pool and its
// victim cache, and the finalizers close the fds.
func releaseSplicePipes() {
	runtime.GC()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
}
