package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/audit"
)

// The capture tests run clients that ignore the proxy variables. Inside
// the sandbox they reach the host's test servers by name only: the DNS stub
// hands out a 198.18.0.0/15 address for a name a rule allows, the capture
// listener maps it back to the name, and the proxy dials the --resolve pin
// (127.0.0.1, allowed by allow_private). No policy allows any other address.
// Capture off (no nf_tables) is not tested: the suite cannot take the
// kernel feature away from one run.

// TestCaptureHTTPByName: curl --noproxy '*', Node's fetch and a Go client
// with Proxy: nil reach an allowed name through capture, and fail to
// resolve a name no rule allows.
func TestCaptureHTTPByName(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		cc := captureClient(t)
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-http", captureAllowed, srv.port, "")),
			captureAllowed, captureOther) // other.test is pinned too: only the policy refuses it
		ok := "status 200\n" + body("/cap")
		clients := []struct {
			name       string
			command    func(url string) []string
			want       string // stdout for the allowed name
			deniedCode int
			deniedErr  string // on stderr for the denied name
		}{
			{"curl", func(url string) []string {
				return curl("--noproxy", "*", "--max-time", "10", "-w", "status %{http_code}\n", url)
			}, body("/cap") + "status 200\n", 6, "Could not resolve host: " + captureOther},
			{"node fetch", captureNodeFetch, ok, 3, "ENOTFOUND"},
			{"go", func(url string) []string { return []string{cc, "http", url} }, ok, 1, "no such host"},
		}
		for _, c := range clients {
			t.Run(c.name, func(t *testing.T) {
				if _, err := exec.LookPath(c.command("")[0]); err != nil {
					t.Skip(err)
				}
				r := sb.run(t, flags, c.command(fmt.Sprintf("http://%s:%d/cap", captureAllowed, srv.port))...)
				r.wantCode(t, 0)
				wantCaptureStdout(t, r, c.want)
				wantCaptureLookups(t, r, captureAllowed, audit.DecisionAllow, "cap-http")
				got := r.wantDecisions(t, capturedConnect(audit.ProtoHTTP, captureAllowed, srv.port, "cap-http", ""))
				wantTunnelClosed(t, r, got[0])

				r = sb.run(t, flags, c.command(fmt.Sprintf("http://%s:%d/cap", captureOther, srv.port))...)
				r.wantCode(t, c.deniedCode)
				wantCaptureStderr(t, r, c.deniedErr)
				wantCaptureStderr(t, r, "osandbox: denied DNS other.test A (no_matching_rule)\n")
				wantCaptureLookups(t, r, captureOther, audit.DecisionDeny, "")
				r.wantDecisions(t)
			})
		}
		if n := srv.hits.Load(); n > int64(len(clients)) {
			t.Errorf("server got %d requests, want one per client at most", n)
		}
	})
}

// TestCaptureHTTPInspected: plain HTTP by name to a host with http rules
// runs the request loop: each request is decided, and one whose Host
// names another host than the connection's is refused.
func TestCaptureHTTPInspected(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-l7", captureAllowed, srv.port, captureGetOK)+
			captureRule("cap-other", captureOther, srv.port, "")), captureAllowed, captureOther)
		url := fmt.Sprintf("http://%s:%d", captureAllowed, srv.port)
		get := "curl -sS --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}\\n' "
		r := sb.run(t, flags, "sh", "-c", get+url+"/ok; "+get+url+"/nope; "+
			get+fmt.Sprintf("-H 'Host: %s:%d' ", captureOther, srv.port)+url+"/ok")
		r.wantCode(t, 0)
		wantCaptureStdout(t, r, "200\n403\n421\n")
		conn := capturedConnect(audit.ProtoHTTP, captureAllowed, srv.port, "cap-l7", "")
		r.wantDecisions(t, conn, capturedRequest(conn, "/ok", 200, "rule_allow"),
			conn, capturedRequest(conn, "/nope", 403, "no_matching_rule"),
			conn, capturedRequest(conn, "/ok", 421, "host_mismatch"))
		if n := srv.hits.Load(); n != 1 {
			t.Errorf("server got %d requests, want 1", n)
		}
	})
}

// TestCaptureHTTPS: TLS by name. A rule without http tunnels it blind (the
// client verifies the server's own certificate); a rule with http rules
// intercepts it with the run's CA and decides each request.
func TestCaptureHTTPS(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv, certPEM := newTLSServer(t, captureAllowed)
		cc := captureClient(t)
		ca := sb.file(t, "server.pem", certPEM)
		url := func(path string) string { return fmt.Sprintf("https://%s:%d%s", captureAllowed, srv.port, path) }

		t.Run("blind", func(t *testing.T) {
			flags := captureFlags(capturePolicy(t, sb, captureRule("cap-tls", captureAllowed, srv.port, "")), captureAllowed)
			for _, command := range [][]string{
				curl("--noproxy", "*", "--max-time", "10", "--cacert", ca, "-w", "status %{http_code}\n", url("/blind")),
				{cc, "-cacert", ca, "http", url("/blind")},
			} {
				r := sb.run(t, flags, command...)
				r.wantCode(t, 0)
				if !strings.Contains(r.stdout, "status 200\n") || !strings.Contains(r.stdout, body("/blind")) {
					t.Errorf("%s: stdout %q, want status 200 and %q", command[0], r.stdout, body("/blind"))
				}
				wantCaptureLookups(t, r, captureAllowed, audit.DecisionAllow, "cap-tls")
				wantTunnelClosed(t, r, r.wantDecisions(t, capturedConnect(audit.ProtoHTTPS, captureAllowed, srv.port, "cap-tls", ""))[0])
			}
		})

		t.Run("intercepted", func(t *testing.T) {
			policy := capturePolicy(t, sb, captureRule("cap-l7", captureAllowed, srv.port, captureGetOK))
			flags := append(captureFlags(policy, captureAllowed), "--upstream-ca", ca)
			conn := capturedConnect(audit.ProtoHTTPS, captureAllowed, srv.port, "cap-l7", "")
			// curl and Go trust the run's CA through CURL_CA_BUNDLE and SSL_CERT_FILE.
			r := sb.run(t, flags, curl("--noproxy", "*", "--max-time", "10", "-i", url("/ok"))...)
			r.wantCode(t, 0)
			if resp, text := parseResponse(t, r.stdout); resp.StatusCode != 200 || text != body("/ok") {
				t.Errorf("GET /ok: %d %q, want 200 %q", resp.StatusCode, text, body("/ok"))
			}
			r.wantDecisions(t, conn, capturedRequest(conn, "/ok", 200, "rule_allow"))

			r = sb.run(t, flags, curl("--noproxy", "*", "--max-time", "10", "-i", url("/nope"))...)
			r.wantCode(t, 0)
			wantDenial(t, r.stdout, denialBody{Error: "policy_denied", Reason: "no_matching_rule", Method: "GET",
				Host: captureAllowed, Port: srv.port, Path: "/nope"})
			r.wantDecisions(t, conn, capturedRequest(conn, "/nope", 403, "no_matching_rule"))

			r = sb.run(t, flags, cc, "http", url("/ok"))
			r.wantCode(t, 0)
			wantCaptureStdout(t, r, "status 200\n"+body("/ok"))
			r.wantDecisions(t, conn, capturedRequest(conn, "/ok", 200, "rule_allow"))
		})
		if n := srv.hits.Load(); n != 4 {
			t.Errorf("server got %d requests, want 4 (the denied one never reaches it)", n)
		}
	})
}

// TestCaptureHostMismatch: a connection made to allowed.test whose
// ClientHello names other.test is refused before any dial, although a
// rule allows both names.
func TestCaptureHostMismatch(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv, certPEM := newTLSServer(t, captureAllowed)
		ca := sb.file(t, "server.pem", certPEM)
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-tls", captureAllowed, srv.port, "")+
			captureRule("cap-other", captureOther, srv.port, "")), captureAllowed, captureOther)
		r := sb.run(t, flags, captureClient(t), "-cacert", ca, "-servername", captureOther, "http",
			fmt.Sprintf("https://%s:%d/", captureAllowed, srv.port))
		r.wantCode(t, 1)
		wantCaptureStderr(t, r, "EOF")
		wantCaptureStderr(t, r, fmt.Sprintf("osandbox: denied CONNECT %s:%d (host_mismatch)", captureAllowed, srv.port))
		r.wantDecisions(t, capturedConnect(audit.ProtoHTTPS, captureAllowed, srv.port, "", "host_mismatch"))
		if n := srv.hits.Load(); n != 0 {
			t.Errorf("server got %d requests, want none", n)
		}
	})
}

// TestCaptureRawTCP: a line protocol (neither TLS nor HTTP) to a host:port
// a rule allows at L4 is tunnelled; to one with http rules it is refused.
func TestCaptureRawTCP(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		echo := newCaptureEcho(t)
		cc := captureClient(t)
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-tcp", captureAllowed, echo.port, "")+
			captureRule("cap-web", captureOther, echo.port, captureGetOK)), captureAllowed, captureOther)

		r := sb.run(t, flags, cc, "tcp", fmt.Sprintf("%s:%d", captureAllowed, echo.port), "ping")
		r.wantCode(t, 0)
		wantCaptureStdout(t, r, "echo: ping\n")
		wantTunnelClosed(t, r, r.wantDecisions(t, capturedConnect(audit.ProtoTCP, captureAllowed, echo.port, "cap-tcp", ""))[0])

		r = sb.run(t, flags, cc, "tcp", fmt.Sprintf("%s:%d", captureOther, echo.port), "ping")
		r.wantCode(t, 1)
		wantCaptureStderr(t, r, "EOF")
		r.wantDecisions(t, capturedConnect(audit.ProtoTCP, captureOther, echo.port, "", "not_http"))
		if n := echo.accepted.Load(); n != 1 {
			t.Errorf("echo server accepted %d connections, want 1", n)
		}
	})
}

// TestCaptureDeniedDestination: a connection is decided like a CONNECT to
// its name and port; to an address the stub never handed out, as that IP.
// Plain HTTP gets the 403 JSON, anything else is closed. DNS over TCP is
// such a connection too, so it cannot leak a name either.
func TestCaptureDeniedDestination(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-http", captureAllowed, srv.port, "")), captureAllowed)
		const unmapped = "198.18.200.7" // synthetic, never handed out in these runs
		cases := []struct {
			name, host string
			port       int
		}{
			{"unmapped address", unmapped, 80},
			{"port no rule allows", captureAllowed, 1},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := sb.run(t, flags, curl("--noproxy", "*", "--max-time", "10", "-i",
					fmt.Sprintf("http://%s:%d/x", c.host, c.port))...)
				r.wantCode(t, 0)
				wantDenial(t, r.stdout, denialBody{Error: "policy_denied", Reason: "no_matching_rule",
					Method: "GET", Host: c.host, Port: c.port, Path: "/x"})
				r.wantDecisions(t, capturedConnect(audit.ProtoHTTP, c.host, c.port, "", "no_matching_rule"))
			})
		}
		t.Run("DNS over TCP", func(t *testing.T) {
			r := sb.run(t, flags, captureClient(t), "tcp", "192.0.2.53:53", "allowed.test")
			r.wantCode(t, 1)
			r.wantDecisions(t, capturedConnect(audit.ProtoTCP, "192.0.2.53", 53, "", "no_matching_rule"))
			if n := len(r.only(audit.EventDNS)); n != 0 {
				t.Errorf("%d dns events, want none; log:\n%s", n, r.dump())
			}
		})
		if n := srv.hits.Load(); n != 0 {
			t.Errorf("server got %d requests, want none", n)
		}
	})
}

// TestCaptureFailsFast: UDP other than DNS (QUIC included) and IPv6 to a
// non-loopback address fail at once instead of timing out.
func TestCaptureFailsFast(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-http", captureAllowed, 0, "")), captureAllowed)
		const udp = "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
		cases := []struct {
			name, code string
			errnos     []string
		}{
			{"UDP 9999", udp + `s.sendto(b"ping", ("198.18.0.99", 9999)); s.recv(16)`, []string{"EPERM", "ECONNREFUSED"}},
			{"UDP 443 connected", udp + `s.connect(("198.18.0.99", 443)); s.send(b"quic"); s.recv(16)`,
				[]string{"EPERM", "ECONNREFUSED"}},
			{"IPv6", `socket.create_connection(("2001:db8::1", 80), timeout=3)`,
				[]string{"ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "EPERM", "EACCES"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := sb.run(t, flags, "python3", "-c", captureFailFast, c.code)
				r.wantCode(t, 0)
				f := strings.Fields(r.stdout)
				if len(f) != 2 || !slices.Contains(c.errnos, f[0]) {
					t.Fatalf("output %q, want one of %v and a time\nstderr:\n%s", r.stdout, c.errnos, r.stderr)
				}
				if secs, err := strconv.ParseFloat(f[1], 64); err != nil || secs > 0.5 {
					t.Errorf("failed with %s after %ss, want well under a second", f[0], f[1])
				}
				r.wantDecisions(t)
				if n := len(r.only(audit.EventDNS)); n != 0 {
					t.Errorf("%d dns events, want none; log:\n%s", n, r.dump())
				}
			})
		}
	})
}

// TestCaptureWebSocket: a WebSocket client that ignores proxies echoes
// through capture: blind under a rule without http, and intercepted (wss,
// upgrade checked) under a rule with http and upgrade.
func TestCaptureWebSocket(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		cc := captureClient(t)
		t.Run("blind", func(t *testing.T) {
			port, _ := newCaptureWSServer(t, "")
			flags := captureFlags(capturePolicy(t, sb, captureRule("cap-ws", captureAllowed, port, "")), captureAllowed)
			r := sb.run(t, flags, cc, "ws", fmt.Sprintf("ws://%s:%d/echo", captureAllowed, port), "hi")
			r.wantCode(t, 0)
			wantCaptureStdout(t, r, "echo: hi\n")
			wantTunnelClosed(t, r, r.wantDecisions(t, capturedConnect(audit.ProtoHTTP, captureAllowed, port, "cap-ws", ""))[0])
		})
		t.Run("intercepted", func(t *testing.T) {
			port, certPEM := newCaptureWSServer(t, captureAllowed)
			policy := capturePolicy(t, sb, captureRule("cap-wss", captureAllowed, port,
				"      - methods: [GET]\n        paths: [/echo]\n        upgrade: [websocket]\n"))
			flags := append(captureFlags(policy, captureAllowed), "--upstream-ca", sb.file(t, "ws.pem", certPEM))
			r := sb.run(t, flags, cc, "ws", fmt.Sprintf("wss://%s:%d/echo", captureAllowed, port), "hi")
			r.wantCode(t, 0)
			wantCaptureStdout(t, r, "echo: hi\n")
			conn := capturedConnect(audit.ProtoHTTPS, captureAllowed, port, "cap-wss", "")
			request := capturedRequest(conn, "/echo", 101, "rule_allow")
			request.Decision = audit.DecisionAllowUpgrade
			upgrade := request
			upgrade.Event = audit.EventUpgrade
			got := r.wantDecisions(t, conn, request, upgrade)
			for _, e := range got[1:] {
				if e.Upgrade != "websocket" || e.Conn != got[0].Conn {
					t.Errorf("%s event has upgrade %q, conn %d; want websocket, conn %d", e.Event.Event, e.Upgrade, e.Conn, got[0].Conn)
				}
			}
		})
	})
}

// TestDNSStub: each query to port 53, whatever the server address, is
// answered by the stub and audited once: A for an allowed name gets a
// stable 198.18.0.0/15 address, AAAA and other types an empty NOERROR,
// every other name NXDOMAIN. Nothing else is asked.
func TestDNSStub(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		cc := captureClient(t)
		policy := capturePolicy(t, sb, captureRule("cap-exact", captureAllowed, 80, "")+
			captureRule("cap-glob", "*.glob.test", 443, ""))
		queries := []struct {
			server, name, qtype string
			decision, rule      string
			want                string // capclient's output; "A" stands for a 198.18.0.0/15 address
		}{
			{"", "allowed.test", "A", audit.DecisionAllow, "cap-exact", "NOERROR A"},
			{"", "allowed.test", "AAAA", audit.DecisionAllow, "cap-exact", "NOERROR"},
			{"", "ALLOWED.test.", "A", audit.DecisionAllow, "cap-exact", "NOERROR A"},
			{"", "allowed.test", "MX", audit.DecisionAllow, "cap-exact", "NOERROR"},
			{"", "a.b.glob.test", "A", audit.DecisionAllow, "cap-glob", "NOERROR A"},
			{"", "glob.test", "A", audit.DecisionDeny, "", "NXDOMAIN"},
			{"", "other.test", "A", audit.DecisionDeny, "", "NXDOMAIN"},
			{"", "other.test", "AAAA", audit.DecisionDeny, "", "NXDOMAIN"},
			{"127.0.0.53", "other.test", "A", audit.DecisionDeny, "", "NXDOMAIN"},
			{"198.18.0.53", "allowed.test", "A", audit.DecisionAllow, "cap-exact", "NOERROR A"},
		}
		var script []string
		for _, q := range queries {
			script = append(script, fmt.Sprintf("%s -server '%s' dns '%s' %s || echo failed", cc, q.server, q.name, q.qtype))
		}
		r := sb.run(t, captureFlags(policy), "sh", "-c", strings.Join(script, "; "))
		r.wantCode(t, 0)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if len(lines) != len(queries) {
			t.Fatalf("%d answers, want %d:\n%s\nstderr:\n%s", len(lines), len(queries), r.stdout, r.stderr)
		}
		synthetic := regexp.MustCompile(`^NOERROR (198\.1[89]\.\d+\.\d+)$`)
		addrs := map[string]string{} // lower-case name -> address
		for i, q := range queries {
			got := lines[i]
			if m := synthetic.FindStringSubmatch(got); m != nil && q.want == "NOERROR A" {
				name := strings.TrimSuffix(strings.ToLower(q.name), ".")
				if a, seen := addrs[name]; seen && a != m[1] {
					t.Errorf("%s got %s, earlier %s: want one address per name", name, m[1], a)
				}
				addrs[name] = m[1]
				got = "NOERROR A"
			}
			if got != q.want {
				t.Errorf("%s %s via %q: answer %q, want %q", q.name, q.qtype, q.server, lines[i], q.want)
			}
		}
		if addrs["allowed.test"] == addrs["a.b.glob.test"] {
			t.Errorf("two names share address %s", addrs["allowed.test"])
		}
		got := captureDNSQueries(r)
		if len(got) != len(queries) {
			t.Fatalf("%d dns events for %d queries; log:\n%s", len(got), len(queries), r.dump())
		}
		for i, q := range queries {
			want := captureDNSQuery{strings.TrimSuffix(strings.ToLower(q.name), "."), q.qtype, q.decision, q.rule}
			if got[i] != want {
				t.Errorf("dns event %d: %+v, want %+v", i, got[i], want)
			}
		}
		r.wantDecisions(t)
	})
}

// TestDNSGetent: the system resolver (getent) gets a synthetic address for
// an allowed name and fails for another, and the audit log says why.
func TestDNSGetent(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		flags := captureFlags(capturePolicy(t, sb, captureRule("cap-exact", captureAllowed, 0, "")))
		r := sb.run(t, flags, "sh", "-c", `getent hosts allowed.test; echo "rc=$?"; getent hosts other.test; echo "rc=$?"`)
		r.wantCode(t, 0)
		if !regexp.MustCompile(`^198\.1[89]\.\d+\.\d+\s+allowed\.test\nrc=0\nrc=2\n$`).MatchString(r.stdout) {
			t.Errorf("getent output %q, want a 198.18.0.0/15 address for allowed.test and status 2 for other.test", r.stdout)
		}
		wantCaptureStderr(t, r, "osandbox: denied DNS other.test A (no_matching_rule)\n")
		var allowed, denied result
		for _, e := range r.only(audit.EventDNS) {
			if e.Name == captureAllowed {
				allowed.log = append(allowed.log, e)
			} else {
				denied.log = append(denied.log, e)
			}
		}
		wantCaptureLookups(t, &allowed, captureAllowed, audit.DecisionAllow, "cap-exact")
		wantCaptureLookups(t, &denied, captureOther, audit.DecisionDeny, "")
		r.wantDecisions(t)
	})
}
