package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/osandbox/osandbox/audit"
)

// wsClient is the e2e/wsclient program, built once next to the osandbox
// binary (a directory every user can read, which TestMain removes).
var wsClient struct {
	once sync.Once
	path string
	err  error
}

func wsClientBinary(t *testing.T) string {
	t.Helper()
	wsClient.once.Do(func() {
		out := filepath.Join(filepath.Dir(bin), "wsclient")
		cmd := exec.Command("go", "build", "-o", out, "./e2e/wsclient")
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			wsClient.err = fmt.Errorf("build e2e/wsclient: %w\n%s", err, b)
			return
		}
		wsClient.path, wsClient.err = out, os.Chmod(out, 0o755)
	})
	if wsClient.err != nil {
		t.Fatal(wsClient.err)
	}
	return wsClient.path
}

// wsEcho is a WebSocket echo server (coder/websocket) for messages up to
// 2 MiB.
var wsEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(2 << 20)
	for {
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, b); err != nil {
			return
		}
	}
})

// Names for the WebSocket servers, all pinned to 127.0.0.1.
const (
	wsHost          = "ws.e2e.test"        // ws://, an http rule with upgrade: [websocket]
	wssHost         = "wss.e2e.test"       // wss://, the same rule: intercepted
	wssBlindHost    = "wss-blind.e2e.test" // wss://, a rule without http: blind tunnel
	wsNoUpgradeHost = "ws-noup.e2e.test"   // ws://, an http rule that permits no upgrade
)

// TestWebSocketInSandbox: a Go WebSocket client inside the sandbox, using
// only its environment (HTTP_PROXY, HTTPS_PROXY, SSL_CERT_FILE), echoes
// text, binary and 1 MiB messages over ws:// (the forward path), wss://
// through TLS interception and wss:// through a blind tunnel. The
// inspected paths audit allow_upgrade, an upgrade and a close with the
// bytes; an upgrade no rule permits gets 403.
func TestWebSocketInSandbox(t *testing.T) {
	client := wsClientBinary(t)
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		plain := httptest.NewUnstartedServer(wsEcho)
		plain.Listener.Close()
		plain.Listener = loopbackListener(t)
		plain.Start()
		t.Cleanup(plain.Close)
		plainPort := plain.Listener.Addr().(*net.TCPAddr).Port
		tlsPort, tlsCert := serveTLS(t, wssHost, wsEcho)
		blindPort, blindCert := serveTLS(t, wssBlindHost, wsEcho)

		policy := sb.file(t, "policy.yaml", fmt.Sprintf(`version: 1
allow:
  - name: ws
    hosts: [%s, %s]
    ports: [%d, %d]
    http:
      - methods: [GET]
        paths: [/echo]
        upgrade: [websocket]
  - name: ws-blind
    hosts: [%s]
    ports: [%d]
  - name: ws-no-upgrade
    hosts: [%s]
    ports: [%d]
    http:
      - methods: [GET]
        paths: [/echo]
allow_private: [127.0.0.1/32]
`, wsHost, wssHost, plainPort, tlsPort, wssBlindHost, blindPort, wsNoUpgradeHost, plainPort))
		flags := []string{"--policy", policy, "--upstream-ca", sb.file(t, "upstream.pem", tlsCert)}
		for _, h := range []string{wsHost, wssHost, wssBlindHost, wsNoUpgradeHost} {
			flags = append(flags, "--resolve", h+":127.0.0.1")
		}
		blindPEM := sb.file(t, "blind.pem", blindCert)
		const echoed = "text ok\nbinary ok\n1MiB ok\n"

		t.Run("ws_forward", func(t *testing.T) {
			r := sb.run(t, flags, client, fmt.Sprintf("ws://%s:%d/echo", wsHost, plainPort))
			r.wantCode(t, 0)
			if r.stdout != echoed {
				t.Errorf("stdout %q, want %q\nstderr:\n%s", r.stdout, echoed, r.stderr)
			}
			wantUpgraded(t, r, audit.ProtoHTTP, wsHost)
		})

		t.Run("wss_intercepted", func(t *testing.T) {
			r := sb.run(t, flags, client, fmt.Sprintf("wss://%s:%d/echo", wssHost, tlsPort))
			r.wantCode(t, 0)
			if r.stdout != echoed {
				t.Errorf("stdout %q, want %q\nstderr:\n%s", r.stdout, echoed, r.stderr)
			}
			req := wantUpgraded(t, r, audit.ProtoHTTPS, wssHost)
			connects := r.only(audit.EventConnect)
			if len(connects) != 1 || connects[0].Conn != req.Conn || connects[0].Decision != audit.DecisionAllow {
				t.Errorf("want one allowed CONNECT on the upgraded conn; audit:\n%s", r.dump())
			}
		})

		t.Run("wss_blind", func(t *testing.T) {
			r := sb.run(t, flags, client, "-cacert", blindPEM, fmt.Sprintf("wss://%s:%d/echo", wssBlindHost, blindPort))
			r.wantCode(t, 0)
			if r.stdout != echoed {
				t.Errorf("stdout %q, want %q\nstderr:\n%s", r.stdout, echoed, r.stderr)
			}
			connects, closes := r.only(audit.EventConnect), r.only(audit.EventClose)
			if len(connects) != 1 || len(closes) != 1 || len(r.only(audit.EventRequest, audit.EventUpgrade)) != 0 {
				t.Fatalf("want one connect and its close, nothing inspected; audit:\n%s", r.dump())
			}
			if c := connects[0]; c.Decision != audit.DecisionAllow || c.Rule != "ws-blind" || c.Host != wssBlindHost {
				t.Errorf("connect audited as %+v", decisionOf(c))
			}
			if c := closes[0]; c.Conn != connects[0].Conn || c.BytesUp < 1<<20 || c.BytesDown < 1<<20 {
				t.Errorf("close has conn %d, bytes_up %d, bytes_down %d; want conn %d and over 1 MiB each way",
					c.Conn, c.BytesUp, c.BytesDown, connects[0].Conn)
			}
		})

		t.Run("upgrade_not_allowed", func(t *testing.T) {
			r := sb.run(t, flags, client, fmt.Sprintf("ws://%s:%d/echo", wsNoUpgradeHost, plainPort))
			r.wantCode(t, 1)
			if !strings.Contains(r.stderr, "403") {
				t.Errorf("the client did not report a 403:\n%s", r.stderr)
			}
			got := r.wantDecisions(t, decision{
				Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "upgrade_not_allowed", Rule: "ws-no-upgrade",
				Proto: audit.ProtoHTTP, Method: "GET", Host: wsNoUpgradeHost, Port: plainPort, Path: "/echo", Status: 403,
			})
			if got[0].Upgrade != "websocket" {
				t.Errorf("denied request audited with upgrade %q, want websocket", got[0].Upgrade)
			}
		})
	})
}

// wantUpgraded checks the audit of one WebSocket that echoed over 1 MiB
// each way: the request (allow_upgrade, 101), its upgrade event, and the
// close of the same connection with the bytes. It returns the request.
func wantUpgraded(t *testing.T, r *result, proto, host string) entry {
	t.Helper()
	reqs, upgs := r.only(audit.EventRequest), r.only(audit.EventUpgrade)
	if len(reqs) != 1 || len(upgs) != 1 {
		t.Fatalf("want one request and one upgrade event; audit:\n%s", r.dump())
	}
	req, upg := reqs[0], upgs[0]
	if req.Decision != audit.DecisionAllowUpgrade || req.Reason != "rule_allow" || req.Rule != "ws" ||
		req.Proto != proto || req.Method != "GET" || req.Host != host || req.Path != "/echo" ||
		req.Status != 101 || req.Upgrade != "websocket" {
		t.Errorf("request audited as %+v (upgrade %q)", decisionOf(req), req.Upgrade)
	}
	if upg.Conn != req.Conn || upg.Upgrade != "websocket" || upg.Decision != audit.DecisionAllowUpgrade ||
		!upg.has(audit.FieldOverflowBytes) {
		t.Errorf("upgrade event %s", upg.fields)
	}
	var closed bool
	for _, c := range r.only(audit.EventClose) {
		if c.Conn != req.Conn {
			continue
		}
		closed = true
		if c.BytesUp < 1<<20 || c.BytesDown < 1<<20 {
			t.Errorf("close has bytes_up %d, bytes_down %d; want over 1 MiB each way", c.BytesUp, c.BytesDown)
		}
	}
	if !closed {
		t.Errorf("no close event for conn %d; audit:\n%s", req.Conn, r.dump())
	}
	return req
}
