package proxy

// What the upstream gets: an upgrade request asked for in any of its
// legitimate forms, with the hop-by-hop headers gone and the end-to-end ones
// kept (as httputil.ReverseProxy does); and pipelined requests in an
// inspected CONNECT, answered in order.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

func TestRelayUpgradeRequestForms(t *testing.T) {
	up := startRawUpstream(t, echoUpstream)
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		for _, tc := range []struct {
			name    string
			headers []string
		}{
			{"plain", []string{"Connection: Upgrade", "Upgrade: websocket"}},
			{"lower_case", []string{"connection: upgrade", "upgrade: websocket"}},
			{"token_in_list", []string{"Connection: keep-alive, Upgrade", "Upgrade: WebSocket"}},
			{"token_in_second_header", []string{"Connection: keep-alive", "Connection: Upgrade", "Upgrade: websocket"}},
			{"hop_by_hop_headers", []string{
				"Connection: Upgrade, X-Hop", "Upgrade: websocket", "X-Hop: secret",
				"Keep-Alive: timeout=5", "Proxy-Connection: keep-alive", "Proxy-Authorization: Basic c2VjcmV0",
				"Te: trailers", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
				"X-End: kept",
			}},
		} {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				tp := startProxy(t, relayPolicy(up.port, path.inspect, "websocket"), nil)
				c := dialRaw(t, tp, path, up.port)
				before := len(up.requests())
				c.send(http.MethodGet, "/ws", tc.headers, nil)
				if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("got %s", resp.Status)
				}
				echoOnce(t, c)
				seen := up.requests()[before:]
				if len(seen) != 1 {
					t.Fatalf("upstream saw %d requests", len(seen))
				}
				h := seen[0].Header
				if !httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") ||
					!strings.EqualFold(h.Get("Upgrade"), "websocket") {
					t.Errorf("upstream got Connection %q Upgrade %q", h["Connection"], h["Upgrade"])
				}
				for _, hop := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te"} {
					if v, ok := h[hop]; ok {
						t.Errorf("upstream got hop-by-hop %s: %q", hop, v)
					}
				}
				for _, name := range []string{"Sec-WebSocket-Key", "Sec-WebSocket-Version", "X-End"} {
					if sent := headerIn(tc.headers, name); h.Get(name) != sent {
						t.Errorf("upstream got %s %q, client sent %q", name, h.Get(name), sent)
					}
				}
				if n := len(h["Connection"]); n != 1 || !strings.EqualFold(h.Get("Connection"), "upgrade") {
					t.Errorf("upstream Connection %q, want just Upgrade", h["Connection"])
				}
			})
		}
	}
}

// headerIn is the value of name among "Name: value" lines, or "".
func headerIn(lines []string, name string) string {
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestRelayPipelinedRequests: requests written back to back before any
// answer are relayed one at a time and answered in order, the last one an
// upgrade.
func TestRelayPipelinedRequests(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		for {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			if proto := req.Header.Get("Upgrade"); proto != "" {
				fmt.Fprintf(c, switchHead, proto)
				_, _ = io.Copy(c, r)
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		}
	})
	tp := startProxy(t, relayPolicy(up.port, true, "example-echo/1"), nil)
	c := dialRaw(t, tp, inspectedPath, up.port)
	var all strings.Builder
	for _, p := range []string{"/one", "/two", "/three"} {
		fmt.Fprintf(&all, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", p, c.target)
	}
	fmt.Fprintf(&all, "GET /up HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: example-echo/1\r\n\r\nafter", c.target)
	c.write(all.String())
	for _, p := range []string{"/one", "/two", "/three"} {
		requireBody(t, c.read(http.MethodGet), http.StatusOK, p)
	}
	if resp := c.read(http.MethodGet); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	if got := c.readFull(len("after")); string(got) != "after" {
		t.Fatalf("echo %q", got)
	}
}
