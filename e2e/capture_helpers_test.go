package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/osandbox/osandbox/audit"
)

// Names the capture tests reach their local servers by: reserved TLDs,
// pinned to 127.0.0.1 with --resolve. A name no rule allows gets NXDOMAIN
// from the stub, even though it is pinned too.
const (
	captureAllowed = "allowed.test"
	captureOther   = "other.test"
)

// helperBuilds are the helper commands under e2e/ (capclient,
// nonetfilter), each built once next to the osandbox binary: in a
// directory every user may read and execute, removed by TestMain.
var helperBuilds struct {
	mu    sync.Mutex
	paths map[string]string
}

// helperBinary builds ./e2e/name once and returns its path.
func helperBinary(t *testing.T, name string) string {
	t.Helper()
	helperBuilds.mu.Lock()
	defer helperBuilds.mu.Unlock()
	if p, ok := helperBuilds.paths[name]; ok {
		return p
	}
	out := filepath.Join(filepath.Dir(bin), name)
	cmd := exec.Command("go", "build", "-o", out, "./e2e/"+name)
	cmd.Dir = ".."
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, msg)
	}
	if helperBuilds.paths == nil {
		helperBuilds.paths = map[string]string{}
	}
	helperBuilds.paths[name] = out
	return out
}

// captureClient is the capclient binary: a client that ignores proxy
// variables.
func captureClient(t *testing.T) string {
	t.Helper()
	return helperBinary(t, "capclient")
}

// capturePolicy writes a policy file with the given allow rules (YAML list
// items, indented by two spaces) and allow_private for 127.0.0.1 only,
// since every test server listens there.
func capturePolicy(t *testing.T, sb *sandbox, rules string) string {
	t.Helper()
	sb.runs++ // a fresh file name per call
	return sb.file(t, fmt.Sprintf("policy-%d.yaml", sb.runs),
		"version: 1\nallow:\n"+rules+"allow_private: [127.0.0.1/32]\n")
}

// captureRule is one allow rule for capturePolicy: name allows host on
// port (0: the default ports), with the http entries (YAML list items,
// indented by six) if any.
func captureRule(name, host string, port int, http string) string {
	r := fmt.Sprintf("  - name: %s\n    hosts: [%q]\n", name, host)
	if port != 0 {
		r += fmt.Sprintf("    ports: [%d]\n", port)
	}
	if http != "" {
		r += "    http:\n" + http
	}
	return r
}

// captureGetOK is the http entries of a rule that allows GET /ok and
// nothing else.
const captureGetOK = "      - methods: [GET]\n        paths: [/ok]\n"

// capturedConnect is the connect event of a captured connection to
// host:port, allowed by rule (dialled at 127.0.0.1:port), or denied for
// reason when rule is "".
func capturedConnect(proto, host string, port int, rule, reason string) decision {
	d := decision{Event: audit.EventConnect, Decision: audit.DecisionDeny, Reason: reason,
		Proto: proto, Host: host, Port: port}
	if rule != "" {
		d.Decision, d.Reason, d.Rule, d.Dst = audit.DecisionAllow, "rule_allow", rule, fmt.Sprintf("127.0.0.1:%d", port)
	}
	return d
}

// capturedRequest is a request event inside the inspected connection
// conn: a GET of path answered with status, allowed by conn's rule unless
// reason is a denial. The upstream is already open, so a denial has dst
// too.
func capturedRequest(conn decision, path string, status int, reason string) decision {
	d := conn
	d.Event, d.Method, d.Path, d.Status = audit.EventRequest, "GET", path, status
	if reason != "rule_allow" {
		d.Decision, d.Reason, d.Rule = audit.DecisionDeny, reason, ""
	}
	return d
}

// captureFlags are the osandbox flags for policy with each name pinned to
// 127.0.0.1 for the proxy's own dials.
func captureFlags(policy string, names ...string) []string {
	flags := []string{"--policy", policy}
	for _, n := range names {
		flags = append(flags, "--resolve", n+":127.0.0.1")
	}
	return flags
}

// captureDNSQuery is the part of a dns event a test pins down.
type captureDNSQuery struct{ Name, QType, Decision, Rule string }

func captureDNSQueries(r *result) []captureDNSQuery {
	var out []captureDNSQuery
	for _, e := range r.only(audit.EventDNS) {
		out = append(out, captureDNSQuery{e.Name, e.QType, e.Decision, e.Rule})
	}
	return out
}

// wantCaptureLookups checks that a resolver library's look-ups of name
// (A, and maybe AAAA, in any order) are the run's only dns events, each
// decided as decision by rule, with proto dns and the matching reason.
func wantCaptureLookups(t *testing.T, r *result, name, decision, rule string) {
	t.Helper()
	events := r.only(audit.EventDNS)
	sawA := false
	for _, e := range events {
		reason := "rule_allow"
		if decision == audit.DecisionDeny {
			reason = "no_matching_rule"
		}
		if e.Name != name || e.Decision != decision || e.Rule != rule || e.Reason != reason ||
			e.Proto != audit.ProtoDNS || (e.QType != "A" && e.QType != "AAAA") {
			t.Errorf("dns event %s; want name %s, qtype A or AAAA, decision %s, reason %s, rule %q",
				e.fields, name, decision, reason, rule)
		}
		sawA = sawA || e.QType == "A"
	}
	if !sawA {
		t.Errorf("no dns event for %s A; audit log:\n%s", name, r.dump())
	}
}

// captureEcho is a raw TCP line-echo server on 127.0.0.1 that counts the
// connections it accepted.
type captureEcho struct {
	port     int
	accepted atomic.Int64
}

func newCaptureEcho(t *testing.T) *captureEcho {
	t.Helper()
	ln := loopbackListener(t)
	s := &captureEcho{port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "echo: %s\n", sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

// newCaptureWSServer starts a WebSocket echo server on 127.0.0.1 at any
// path; with host != "" it speaks TLS with a self-signed certificate for
// host, returned as PEM.
func newCaptureWSServer(t *testing.T, host string) (port int, certPEM string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), runTimeout)
		defer cancel()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, append([]byte("echo: "), b...)); err != nil {
				return
			}
		}
	}))
	srv.Listener.Close()
	srv.Listener = loopbackListener(t)
	if host != "" {
		var cert tls.Certificate
		cert, certPEM = selfSigned(t, host)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, certPEM
}

// captureNodeFetch is a Node one-liner: built-in fetch, which ignores the proxy
// variables. It prints the status and the body, or the error's code and
// exits 3.
func captureNodeFetch(url string) []string {
	return []string{"node", "-e", fmt.Sprintf(`fetch(%q).then(async (r) => {
  process.stdout.write("status " + r.status + "\n" + await r.text());
}).catch((e) => { console.error("fetch:", (e.cause && e.cause.code) || e); process.exit(3); });`, url)}
}

// wantCaptureStdout fails t unless the command printed want.
func wantCaptureStdout(t *testing.T, r *result, want string) {
	t.Helper()
	if r.stdout != want {
		t.Errorf("stdout %q, want %q\nstderr:\n%s", r.stdout, want, r.stderr)
	}
}

// wantCaptureStderr fails t unless osandbox's stderr (the command's too) has sub.
func wantCaptureStderr(t *testing.T, r *result, sub string) {
	t.Helper()
	if !strings.Contains(r.stderr, sub) {
		t.Errorf("stderr lacks %q:\n%s", sub, r.stderr)
	}
}

// captureFailFast is a Python script: its argument is socket code that must fail.
// It prints the errno's name and how many seconds the failure took.
const captureFailFast = `import errno, socket, sys, time
t = time.monotonic()
try:
    exec(sys.argv[1])
except OSError as e:
    print(errno.errorcode.get(e.errno, "timeout"), time.monotonic() - t)
    sys.exit(0)
print("no error")
sys.exit(1)
`
