package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// The command's NO_PROXY lists 127.0.0.1, so curl goes straight to a
// loopback URL (and fails: no route) unless told otherwise; --noproxy ""
// makes it use the proxy for every host.
const viaProxy = ""

// deniedHost matches no rule; the proxy refuses it before any lookup.
const deniedHost = "denied.example"

// TestAllowedHTTP: a server allowed by an IP rule answers through the
// forward proxy, and through a CONNECT tunnel when curl asks for one.
func TestAllowedHTTP(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		hostPort := fmt.Sprintf("127.0.0.1:%d", srv.port)
		flags := []string{"--allow", hostPort}
		rule := "--allow " + hostPort
		url := "http://" + hostPort + "/hello"

		t.Run("forward", func(t *testing.T) {
			r := sb.run(t, flags, curl("--noproxy", viaProxy, url)...)
			r.wantCode(t, 0)
			if r.stdout != body("/hello") {
				t.Errorf("body %q, want %q", r.stdout, body("/hello"))
			}
			r.wantDecisions(t, decision{
				Event: audit.EventRequest, Decision: audit.DecisionAllow, Reason: "rule_allow", Rule: rule,
				Proto: audit.ProtoHTTP, Method: "GET", Host: "127.0.0.1", Port: srv.port, Path: "/hello",
				Status: 200, Dst: hostPort,
			})
		})

		t.Run("CONNECT", func(t *testing.T) {
			// -p: tunnel plain HTTP through CONNECT.
			r := sb.run(t, flags, curl("-p", "--noproxy", viaProxy, url)...)
			r.wantCode(t, 0)
			if r.stdout != body("/hello") {
				t.Errorf("body %q, want %q", r.stdout, body("/hello"))
			}
			got := r.wantDecisions(t, decision{
				Event: audit.EventConnect, Decision: audit.DecisionAllow, Reason: "rule_allow", Rule: rule,
				Proto: audit.ProtoConnect, Method: "CONNECT", Host: "127.0.0.1", Port: srv.port,
				Status: 200, Dst: hostPort,
			})
			wantTunnelClosed(t, r, got[0])
		})
		if n := srv.hits.Load(); n != 2 {
			t.Errorf("server got %d requests, want 2", n)
		}
	})
}

// TestAllowedHTTPS: HTTPS through a blind CONNECT tunnel to a name pinned
// to 127.0.0.1, allowed by a policy file with allow_private. The client
// verifies the server's own certificate: the tunnel does not touch TLS.
func TestAllowedHTTPS(t *testing.T) {
	const host = "tls.e2e.test" // reserved TLD: resolvable only through the pin
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv, certPEM := newTLSServer(t, host)
		policy := sb.file(t, "policy.yaml", fmt.Sprintf(`version: 1
allow:
  - name: e2e-tls
    hosts: [%s]
    ports: [%d]
allow_private: [127.0.0.1/32]
`, host, srv.port))
		ca := sb.file(t, "ca.pem", certPEM)
		url := fmt.Sprintf("https://%s:%d/secure", host, srv.port)

		r := sb.run(t, []string{"--policy", policy, "--resolve", host + ":127.0.0.1"},
			curl("--cacert", ca, url)...)
		r.wantCode(t, 0)
		if r.stdout != body("/secure") {
			t.Errorf("body %q, want %q", r.stdout, body("/secure"))
		}
		got := r.wantDecisions(t, decision{
			Event: audit.EventConnect, Decision: audit.DecisionAllow, Reason: "rule_allow", Rule: "e2e-tls",
			Proto: audit.ProtoConnect, Method: "CONNECT", Host: host, Port: srv.port,
			Status: 200, Dst: fmt.Sprintf("127.0.0.1:%d", srv.port),
		})
		wantTunnelClosed(t, r, got[0])
	})
}

// wantTunnelClosed checks the one close event of the tunnel opened by connect.
func wantTunnelClosed(t *testing.T, r *result, connect entry) {
	t.Helper()
	closes := r.only(audit.EventClose)
	if len(closes) != 1 {
		t.Fatalf("%d close events, want 1; audit log:\n%s", len(closes), r.dump())
	}
	c := closes[0]
	if c.Conn == 0 || c.Conn != connect.Conn {
		t.Errorf("close has conn %d, connect has %d", c.Conn, connect.Conn)
	}
	if c.BytesUp <= 0 || c.BytesDown <= 0 {
		t.Errorf("close has bytes_up %d, bytes_down %d; want both > 0", c.BytesUp, c.BytesDown)
	}
	if !c.has(audit.FieldDurationMS) {
		t.Errorf("close has no %s: %s", audit.FieldDurationMS, c.fields)
	}
}

// TestDeniedHost: a host no rule allows gets the 403 JSON on the forward
// path and a 403 to its CONNECT, one stderr line each unless --quiet, and
// a deny in the audit log either way.
func TestDeniedHost(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		wantGET := decision{
			Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "no_matching_rule",
			Proto: audit.ProtoHTTP, Method: "GET", Host: deniedHost, Port: 80, Path: "/x", Status: 403,
		}
		const getLine = "osandbox: denied GET http://denied.example/x (no_matching_rule)\n"

		t.Run("GET", func(t *testing.T) {
			r := sb.run(t, nil, curl("-i", "http://"+deniedHost+"/x?q=1")...)
			r.wantCode(t, 0)
			wantDenial(t, r.stdout, denialBody{
				Error: "policy_denied", Reason: "no_matching_rule", Method: "GET",
				Host: deniedHost, Port: 80, Path: "/x",
			})
			if !strings.Contains(r.stderr, getLine) {
				t.Errorf("stderr lacks %q:\n%s", getLine, r.stderr)
			}
			r.wantDecisions(t, wantGET)
		})

		t.Run("GET quiet", func(t *testing.T) {
			r := sb.run(t, []string{"--quiet"}, curl("-o", "/dev/null", "-w", "%{http_code}", "http://"+deniedHost+"/x")...)
			r.wantCode(t, 0)
			if r.stdout != "403" {
				t.Errorf("status %q, want 403", r.stdout)
			}
			if strings.Contains(r.stderr, "osandbox: denied") {
				t.Errorf("--quiet, yet stderr has a denial line:\n%s", r.stderr)
			}
			r.wantDecisions(t, wantGET)
		})

		t.Run("CONNECT", func(t *testing.T) {
			r := sb.run(t, nil, curl("-o", "/dev/null", "-w", "%{http_connect}", "https://"+deniedHost+"/")...)
			r.wantCode(t, 56) // curl: failure receiving network data (the CONNECT got 403)
			if r.stdout != "403" {
				t.Errorf("CONNECT status %q, want 403", r.stdout)
			}
			const line = "osandbox: denied CONNECT denied.example:443 (no_matching_rule)\n"
			if !strings.Contains(r.stderr, line) {
				t.Errorf("stderr lacks %q:\n%s", line, r.stderr)
			}
			r.wantDecisions(t, decision{
				Event: audit.EventConnect, Decision: audit.DecisionDeny, Reason: "no_matching_rule",
				Proto: audit.ProtoConnect, Method: "CONNECT", Host: deniedHost, Port: 443, Status: 403,
			})
		})
	})
}

// TestBypassFails: a client that ignores the proxy has no route out, even
// to a server the policy allows; it fails at once and the proxy sees nothing.
func TestBypassFails(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		hostPort := fmt.Sprintf("127.0.0.1:%d", srv.port)
		r := sb.run(t, []string{"--allow", hostPort},
			curl("--noproxy", "*", "--max-time", "20", "http://"+hostPort+"/")...)
		r.wantCode(t, 7) // curl: failed to connect
		if r.elapsed > 5*time.Second {
			t.Errorf("the direct connection took %s to fail, want at once", r.elapsed)
		}
		if n := srv.hits.Load(); n != 0 {
			t.Errorf("server got %d requests, want none", n)
		}
		r.wantDecisions(t)
	})
}

// TestPrivateAddressRefused: a name allowed by a rule but pinned to
// 127.0.0.1, with no allow_private, is refused by the SSRF guard on both
// the forward and the CONNECT path.
func TestPrivateAddressRefused(t *testing.T) {
	const host = "pinned.e2e.test"
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		flags := []string{"--allow", fmt.Sprintf("%s:%d", host, srv.port), "--resolve", host + ":127.0.0.1"}

		t.Run("GET", func(t *testing.T) {
			r := sb.run(t, flags, curl("-i", fmt.Sprintf("http://%s:%d/y", host, srv.port))...)
			r.wantCode(t, 0)
			wantDenial(t, r.stdout, denialBody{
				Error: "policy_denied", Reason: "private_address", Method: "GET",
				Host: host, Port: srv.port, Path: "/y",
			})
			r.wantDecisions(t, decision{
				Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "private_address",
				Proto: audit.ProtoHTTP, Method: "GET", Host: host, Port: srv.port, Path: "/y", Status: 403,
			})
		})

		t.Run("CONNECT", func(t *testing.T) {
			r := sb.run(t, flags, curl("-p", "-o", "/dev/null", "-w", "%{http_connect}",
				fmt.Sprintf("http://%s:%d/y", host, srv.port))...)
			r.wantCode(t, 56)
			if r.stdout != "403" {
				t.Errorf("CONNECT status %q, want 403", r.stdout)
			}
			r.wantDecisions(t, decision{
				Event: audit.EventConnect, Decision: audit.DecisionDeny, Reason: "private_address",
				Proto: audit.ProtoConnect, Method: "CONNECT", Host: host, Port: srv.port, Status: 403,
			})
		})
		if n := srv.hits.Load(); n != 0 {
			t.Errorf("server got %d requests, want none", n)
		}
	})
}
