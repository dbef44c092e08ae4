package proxy

// Decisions the relay makes before the upstream sees a request: which
// Upgrade a rule permits (DESIGN 1.2) and, in an inspected CONNECT, that
// the Host names the CONNECT target.

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// requireDenial checks a refusal against DESIGN 1.4: status, JSON body,
// decision header.
func requireDenial(t *testing.T, resp *http.Response, status int, reason, method, path string, port int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("got %s, want %d", resp.Status, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if h := resp.Header.Get("X-Osandbox-Decision"); h != "deny; reason="+reason {
		t.Errorf("X-Osandbox-Decision %q", h)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	var body struct {
		Error, Reason, Method, Host, Path, Hint string
		Port                                    int
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if body.Reason != reason || body.Method != method || body.Host != "127.0.0.1" ||
		body.Port != port || body.Path != path || body.Hint == "" || body.Error == "" {
		t.Errorf("denial body %s", b)
	}
}

// TestRelayUpgradePolicy: an http rule permits only the Upgrades it lists
// (none when it lists none); a rule without http permits any.
func TestRelayUpgradePolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		path     relayPath
		upgrades []string // of the http rule, when path.inspect
		ask      string
		allowed  bool
	}{
		{name: "forward/rule_without_upgrade", path: forwardPath, ask: "websocket"},
		{name: "forward/other_protocol_listed", path: forwardPath, upgrades: []string{"example-echo/1"}, ask: "websocket"},
		{name: "forward/listed", path: forwardPath, upgrades: []string{"example-echo/1"}, ask: "example-echo/1", allowed: true},
		{name: "forward/listed_any", path: forwardPath, upgrades: []string{`"*"`}, ask: "example-echo/1", allowed: true},
		{name: "forward/no_http_rule", path: forwardAnyPath, ask: "example-echo/1", allowed: true},
		{name: "inspected/rule_without_upgrade", path: inspectedPath, ask: "websocket"},
		{name: "inspected/other_protocol_listed", path: inspectedPath, upgrades: []string{"websocket"}, ask: "example-echo/1"},
		{name: "inspected/listed", path: inspectedPath, upgrades: []string{"websocket"}, ask: "WebSocket", allowed: true},
		{name: "blind/no_http_rule", path: blindPath, ask: "example-echo/1", allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startRawUpstream(t, echoUpstream)
			tp := startProxy(t, relayPolicy(up.port, tc.path.inspect, tc.upgrades...), nil)
			c := dialRaw(t, tp, tc.path, up.port)
			if tc.allowed {
				c.upgrade(tc.ask)
				echoOnce(t, c)
				return
			}
			c.send(http.MethodGet, "/chat?room=1", []string{"Connection: Upgrade", "Upgrade: " + tc.ask}, nil)
			requireDenial(t, c.read(http.MethodGet), http.StatusForbidden, "upgrade_not_allowed", http.MethodGet, "/chat", up.port)
			if rest := c.drain(3 * time.Second); len(rest) > 0 {
				t.Errorf("after the denial: %q", rest)
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("the upstream saw %d requests", n)
			}
			ev := tp.waitAudit(t, "request", func(e audit.Event) bool { return e.Event == audit.EventRequest })
			if ev.Decision != audit.DecisionDeny || ev.Reason != "upgrade_not_allowed" ||
				ev.Status != http.StatusForbidden || ev.Upgrade != strings.ToLower(tc.ask) || ev.Path != "/chat" {
				t.Errorf("request event: %+v", ev)
			}
			if ev.Rule != relayRule {
				t.Errorf("request event names rule %q, want the rule that decided, %q", ev.Rule, relayRule)
			}
		})
	}
}

// TestRelayHostPinning: inside an inspected CONNECT every request must name
// the CONNECT target; the upstream never sees another name. On the forward
// path the absolute URI wins over the Host header.
func TestRelayHostPinning(t *testing.T) {
	up := startRawUpstream(t, echoUpstream)
	target := "127.0.0.1:" + strconv.Itoa(up.port)
	for _, tc := range []struct {
		name    string
		path    relayPath
		uri     string // request-target; "" for /p on the path's form
		host    string // Host header; "" for none (HTTP/1.0)
		upgrade bool
		allowed bool
	}{
		{name: "inspected/same", path: inspectedPath, host: target, allowed: true},
		{name: "inspected/same_in_other_ip_form", path: inspectedPath, host: "2130706433:" + strconv.Itoa(up.port), allowed: true},
		{name: "inspected/http10_without_host", path: inspectedPath, allowed: true},
		{name: "inspected/other_name", path: inspectedPath, host: "example.com"},
		{name: "inspected/other_name_same_port", path: inspectedPath, host: "localhost:" + strconv.Itoa(up.port)},
		{name: "inspected/other_port", path: inspectedPath, host: "127.0.0.1:1"},
		{name: "inspected/default_port", path: inspectedPath, host: "127.0.0.1"},
		{name: "inspected/absolute_uri_elsewhere", path: inspectedPath, uri: "http://example.com/p", host: target},
		{name: "inspected/upgrade_other_name", path: inspectedPath, host: "example.com", upgrade: true},
		{name: "forward/host_header_ignored", path: forwardPath, host: "example.com", allowed: true},
		{name: "forward/upgrade_host_header_ignored", path: forwardPath, host: "example.com", upgrade: true, allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, tc.path.inspect, "websocket"), nil)
			c := dialRaw(t, tp, tc.path, up.port)
			before := len(up.requests())
			uri := tc.uri
			if uri == "" {
				uri = c.uri("/p")
			}
			head := "GET " + uri + " HTTP/1.1\r\nHost: " + tc.host + "\r\n"
			if tc.host == "" {
				head = "GET " + uri + " HTTP/1.0\r\n"
			}
			if tc.upgrade {
				head += "Connection: Upgrade\r\nUpgrade: websocket\r\n"
			}
			c.write(head + "\r\n")
			resp := c.read(http.MethodGet)
			seen := up.requests()[before:]
			if !tc.allowed {
				requireDenial(t, resp, http.StatusMisdirectedRequest, "host_mismatch", http.MethodGet, "/p", up.port)
				if len(seen) != 0 {
					t.Errorf("the upstream saw %d requests", len(seen))
				}
				ev := tp.waitAudit(t, "request", func(e audit.Event) bool { return e.Event == audit.EventRequest })
				if ev.Decision != audit.DecisionDeny || ev.Reason != "host_mismatch" || ev.Status != http.StatusMisdirectedRequest {
					t.Errorf("request event: %+v", ev)
				}
				return
			}
			want := http.StatusOK
			if tc.upgrade {
				want = http.StatusSwitchingProtocols
			}
			if resp.StatusCode != want {
				t.Fatalf("got %s, want %d", resp.Status, want)
			}
			if len(seen) != 1 || seen[0].Host != target {
				for _, r := range seen {
					t.Logf("upstream saw Host %q", r.Host)
				}
				t.Fatalf("upstream saw %d requests, want one with Host %s", len(seen), target)
			}
		})
	}
}
