package e2e

// Load and faults on the real binary: many requests at once, SIGTERM to
// osandbox under load, SIGKILL of the command, an upstream that dies in the
// middle of a WebSocket, and hostile requests on the capture path. The
// proxy-level versions (10,000 requests, goroutine counts) are in
// proxy/load_test.go and proxy/hostile_test.go.

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// osandboxFDs counts the open fds of the osandbox process p.
func osandboxFDs(t *testing.T, p *process) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		t.Skipf("cannot count osandbox's fds: %v", err)
	}
	return len(ents)
}

// TestLoadInSandbox: curl inside the sandbox sends 500 requests, 50 at a
// time, 450 to an allowed server and 50 to a denied host. Every one gets
// its answer, the audit log has exactly one request event per request, and
// osandbox's fds are back to what they were before the load (the server
// closes each connection, so the proxy keeps none idle).
func TestLoadInSandbox(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		srv.Config.SetKeepAlivesEnabled(false)
		const allowed, denied = 450, 50
		ready, goAhead, done, finish := sb.path("ready"), sb.path("go"), sb.path("done"), sb.path("finish")
		out := sb.path("load.out")
		script := fmt.Sprintf(`touch %[1]s; while [ ! -e %[2]s ]; do sleep 0.01; done
curl -sS --noproxy '' -Z --parallel-max 50 "http://127.0.0.1:%[5]d/load/[1-%[6]d]" "http://denied.example/deny/[1-%[7]d]" > %[8]s
touch %[3]s; while [ ! -e %[4]s ]; do sleep 0.01; done`, ready, goAhead, done, finish, srv.port, allowed, denied, out)
		p := sb.start(t, []string{"--allow", fmt.Sprintf("127.0.0.1:%d", srv.port), "--quiet"}, "sh", "-c", script)
		p.awaitFile(ready)
		fd0 := osandboxFDs(t, p)
		sb.file(t, "go", "")
		p.awaitFile(done)
		fd := osandboxFDs(t, p)
		for deadline := time.Now().Add(5 * time.Second); fd > fd0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			fd = osandboxFDs(t, p)
		}
		if fd > fd0 {
			t.Errorf("osandbox has %d fds after the load, %d before", fd, fd0)
		}
		sb.file(t, "finish", "")
		r := p.wait()
		r.wantCode(t, 0)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var ok, refused int
		for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			switch {
			case strings.HasPrefix(line, greeting+": GET /load/"):
				ok++
			case strings.HasPrefix(line, `{"error":"policy_denied","reason":"no_matching_rule"`):
				refused++
			default:
				t.Errorf("unexpected output line %q", line)
			}
		}
		if ok != allowed || refused != denied {
			t.Errorf("%d answers and %d denials, want %d and %d", ok, refused, allowed, denied)
		}
		paths := map[string]int{}
		for _, e := range r.only(audit.EventRequest) {
			paths[e.Path]++
			if (e.Decision == audit.DecisionAllow) != (e.Status == 200) || (e.Decision == audit.DecisionDeny) != (e.Status == 403) {
				t.Errorf("request event %s", e.fields)
			}
		}
		if len(paths) != allowed+denied {
			t.Errorf("%d distinct paths audited, want %d", len(paths), allowed+denied)
		}
		for path, n := range paths {
			if n != 1 {
				t.Errorf("%s audited %d times", path, n)
			}
		}
		if n := srv.hits.Load(); n != allowed {
			t.Errorf("server got %d requests, want %d", n, allowed)
		}
		r.wantExit(t, 0)
	})
}

// loadScript is a Python command that keeps eight threads sending requests
// through the proxy to argv[1] until it gets SIGTERM; then it prints "got
// SIGTERM" and exits 42. It creates argv[2] once the threads run.
const loadScript = `import os, signal, sys, threading, time, urllib.request
url, ready = sys.argv[1], sys.argv[2]
os.environ.pop("NO_PROXY", None)  # urllib would go to 127.0.0.1 direct
os.environ.pop("no_proxy", None)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:3128"}))
def on_term(sig, frame):
    os.write(1, b"got SIGTERM\n")
    os._exit(42)
signal.signal(signal.SIGTERM, on_term)
def worker(i):
    n = 0
    while True:
        try:
            opener.open("%s/%d/%d" % (url, i, n), timeout=10).read()
        except Exception:
            pass
        n += 1
for i in range(8):
    threading.Thread(target=worker, args=(i,), daemon=True).start()
open(ready, "w").close()
while True:
    time.sleep(0.02)
`

// TestSIGTERMUnderLoad: SIGTERM to osandbox while the command keeps eight
// connections busy: the command gets it (and exits 42 from its handler),
// osandbox exits 42, and the audit log is whole: every line parses, each
// request event has its decision and status, and the last event is exit.
func TestSIGTERMUnderLoad(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		for attempt := range 3 { // the shutdown race needs a few tries to show
			srv := newServer(t)
			ready := sb.path(fmt.Sprintf("load-ready-%d", attempt))
			p := sb.start(t, []string{"--allow", fmt.Sprintf("127.0.0.1:%d", srv.port)},
				"python3", "-c", loadScript, fmt.Sprintf("http://127.0.0.1:%d/load", srv.port), ready)
			p.awaitFile(ready)
			for deadline := time.Now().Add(10 * time.Second); srv.hits.Load() < 100 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			p.signal(syscall.SIGTERM)
			r := p.wait()
			r.wantCode(t, 42)
			if !strings.Contains(r.stdout, "got SIGTERM") {
				t.Errorf("the command did not get SIGTERM; stdout %q", r.stdout)
			}
			r.wantExit(t, 42)
			reqs := r.only(audit.EventRequest)
			if len(reqs) < 100 {
				t.Errorf("%d request events, want the 100 or more the server answered", len(reqs))
			}
			for _, e := range reqs {
				if e.Decision == "" || !e.has(audit.FieldStatus) || e.Status == 0 {
					t.Errorf("incomplete request event %s", e.fields)
				}
			}
			if hits := srv.hits.Load(); int64(len(reqs)) > hits+8 || int64(len(reqs)) < hits-8 {
				t.Errorf("%d request events for %d requests the server got (at most 8 in flight)", len(reqs), hits)
			}
			if t.Failed() {
				return
			}
		}
	})
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestSIGKILLCommand: the command killed with SIGKILL (from outside, as
// the OOM killer would) makes osandbox exit 137 with the audit log ending
// in exit 137; osandbox cleans up: the directory with the run's CA is
// gone, and no process the command started is left running.
func TestSIGKILLCommand(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		policy := capturePolicy(t, sb, captureRule("l7", captureAllowed, 0, captureGetOK)) // http rules: a CA exists
		pidFile, childFile, caFile, ready := sb.path("pid"), sb.path("child"), sb.path("ca"), sb.path("ready")
		escapedFile := sb.path("escaped")
		// Two children: one in the command's process group, one that left
		// it with setsid.
		script := fmt.Sprintf(`echo $$ > %s; echo "$SSL_CERT_FILE" > %s
sleep 3600 >/dev/null 2>&1 </dev/null & echo $! > %s
setsid sleep 3600 >/dev/null 2>&1 </dev/null & echo $! > %s
touch %s; wait`, pidFile, caFile, childFile, escapedFile, ready)
		p := sb.start(t, []string{"--policy", policy}, "sh", "-c", script)
		p.awaitFile(ready)
		readPid := func(path string) int {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		pid, child, escaped := readPid(pidFile), readPid(childFile), readPid(escapedFile)
		t.Cleanup(func() {
			syscall.Kill(child, syscall.SIGKILL)
			syscall.Kill(escaped, syscall.SIGKILL)
		})
		b, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		caDir := filepath.Dir(strings.TrimSpace(string(b)))
		if _, err := os.Stat(caDir); err != nil || !strings.Contains(caDir, "osandbox-") {
			t.Fatalf("the run's CA directory %q: %v", caDir, err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r := p.wait()
		r.wantCode(t, 137)
		r.wantExit(t, 137)
		if _, err := os.Stat(caDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the CA directory %s is still there after exit (%v)", caDir, err)
		}
		time.Sleep(100 * time.Millisecond)
		for name, pid := range map[string]int{"child": child, "setsid child": escaped} {
			if processAlive(pid) {
				t.Errorf("the command's %s %d (sleep 3600) is still running after osandbox exited", name, pid)
			}
		}
	})
}

// wsDyingUpstream accepts WebSocket handshakes on 127.0.0.1, sends one text
// message "hello", and resets each connection once kill is closed.
func wsDyingUpstream(t *testing.T, kill <-chan struct{}) int {
	t.Helper()
	ln := loopbackListener(t)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
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
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(runTimeout))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
					"Sec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
				c.Write([]byte{0x81, 5, 'h', 'e', 'l', 'l', 'o'})
				<-kill
				c.(*net.TCPConn).SetLinger(0)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// wsDyingClient is a Python WebSocket client through the proxy: it asks
// argv[1] (HOST:PORT) for an upgrade, prints the status line and the first
// message, creates argv[2], then waits for the connection to end and
// prints "closed".
const wsDyingClient = `import base64, os, socket, sys
target, ready = sys.argv[1], sys.argv[2]
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET http://%s/ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (target, target, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    b = s.recv(4096)
    if not b:
        sys.exit("closed before the 101")
    buf += b
head, rest = buf.split(b"\r\n\r\n", 1)
while len(rest) < 7:
    rest += s.recv(4096)
print(head.split(b"\r\n")[0].decode(), rest[2:7].decode(), flush=True)
open(ready, "w").close()
try:
    while s.recv(4096):
        pass
except OSError:
    pass
print("closed")
`

// TestUpstreamKilledMidWebSocketInSandbox: a WebSocket from inside the
// sandbox whose upstream dies mid-session: the client sees its connection
// end at once, and the audit log has the upgrade and its close.
func TestUpstreamKilledMidWebSocketInSandbox(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		kill := make(chan struct{})
		port := wsDyingUpstream(t, kill)
		target := fmt.Sprintf("127.0.0.1:%d", port)
		ready := sb.path("ws-ready")
		p := sb.start(t, []string{"--allow", target}, "python3", "-c", wsDyingClient, target, ready)
		p.awaitFile(ready)
		close(kill)
		killed := time.Now()
		r := p.wait()
		r.wantCode(t, 0)
		if d := time.Since(killed); d > 5*time.Second {
			t.Errorf("the client took %v to see the end", d)
		}
		if want := "HTTP/1.1 101 Switching Protocols hello\nclosed\n"; r.stdout != want {
			t.Errorf("client printed %q, want %q", r.stdout, want)
		}
		upgrades := r.only(audit.EventUpgrade)
		if len(upgrades) != 1 || upgrades[0].Upgrade != "websocket" {
			t.Fatalf("want one websocket upgrade event; log:\n%s", r.dump())
		}
		closes := r.only(audit.EventClose)
		if len(closes) != 1 || closes[0].Conn != upgrades[0].Conn {
			t.Fatalf("want one close event for conn %d; log:\n%s", upgrades[0].Conn, r.dump())
		}
		if c := closes[0]; c.BytesDown < 7 || !c.has(audit.FieldDurationMS) {
			t.Errorf("close event %s: want bytes_down >= 7 and a duration", c.fields)
		}
		r.wantExit(t, 0)
	})
}

// TestHostileRequestsE2E: the forward path and the capture path read heads
// with the same request loop as an inspected CONNECT. A client sends
// ambiguous framing, an oversize head, a bad version and (through capture)
// a Host for another name, both to the proxy as absolute-URI requests and
// to an inspected name through capture: each gets its 400, 431 or 421 as
// the JSON denial and is audited, and the request hidden behind the
// smuggling cases never reaches the server.
func TestHostileRequestsE2E(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		echo, _ := newHeaderEcho(t, "")
		sb.runs++
		policy := sb.file(t, fmt.Sprintf("policy-%d.yaml", sb.runs), fmt.Sprintf(`version: 1
allow:
  - name: l7
    hosts: [%[1]s]
    ports: [%[2]d]
    http:
      - methods: [GET, POST]
        paths: ["/**"]
deny:
  - name: no-admin
    hosts: [%[1]s]
    ports: [%[2]d]
    http:
      - methods: ["*"]
        paths: ["/admin/**"]
allow_private: [127.0.0.1/32]
`, captureAllowed, echo.port))
		host := fmt.Sprintf("%s:%d", captureAllowed, echo.port)
		for _, path := range []struct {
			name, addr, prefix string
		}{
			{"forward", "127.0.0.1:3128", "http://" + host},
			{"capture", host, ""},
		} {
			t.Run(path.name, func(t *testing.T) {
				hostileRequestsE2E(t, sb, policy, path.addr, path.prefix, host, echo)
			})
		}
	})
}

// hostileRequestsE2E sends the hostile requests to addr, with request
// targets that start with prefix (the absolute URI's scheme and authority
// on the forward path, nothing through capture).
func hostileRequestsE2E(t *testing.T, sb *sandbox, policy, addr, prefix, host string, echo *headerEcho) {
	hidden := "GET " + prefix + "/admin/secret HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	type hostileCase struct {
		name, raw string
		status    int
		reason    string
	}
	cases := []hostileCase{
		{"cl_te", fmt.Sprintf("POST %s/a HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s",
			prefix, host, 5+len(hidden), hidden), 400, "bad_request"},
		{"te_cl", fmt.Sprintf("POST %s/a HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
			prefix, host, len(hidden), hidden), 400, "bad_request"},
		{"duplicate_cl", fmt.Sprintf("POST %s/a HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n%s",
			prefix, host, len(hidden), hidden), 400, "bad_request"},
		{"obs_fold", fmt.Sprintf("GET %s/a HTTP/1.1\r\nHost: %s\r\nX-A: b\r\n c\r\n\r\n", prefix, host), 400, "bad_request"},
		{"bare_lf", fmt.Sprintf("GET %s/a HTTP/1.1\nHost: %s\n\n", prefix, host), 400, "bad_request"},
		{"chunk_overflow", fmt.Sprintf("POST %s/a HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000a\r\nabcdefghij\r\n0\r\n\r\n",
			prefix, host), 400, "bad_request"},
		{"head_over_64KiB", fmt.Sprintf("GET %s/a HTTP/1.1\r\nHost: %s\r\nX-Big: %s\r\n\r\n", prefix, host, strings.Repeat("a", 70<<10)),
			431, "header_too_large"},
		{"http_2_0", fmt.Sprintf("GET %s/a HTTP/2.0\r\nHost: %s\r\n\r\n", prefix, host), 400, "bad_request"},
	}
	if prefix == "" {
		cases = append(cases, hostileCase{"host_mismatch", fmt.Sprintf("GET /a HTTP/1.1\r\nHost: %s:%d\r\n\r\n", captureOther, echo.port), 421, "host_mismatch"})
	} else {
		cases = append(cases, hostileCase{"origin_form_to_proxy", fmt.Sprintf("GET /a HTTP/1.1\r\nHost: %s\r\n\r\n", host), 400, "bad_request"})
	}
	var raws []string
	for _, c := range cases {
		raws = append(raws, c.raw)
	}
	r, got := sb.rawExchanges(t, captureFlags(policy, captureAllowed), addr, raws...)
	for i, raw := range got {
		resp := responses(t, raw, "POST")[0]
		if resp.status != cases[i].status {
			t.Errorf("%s: status %d, want %d", cases[i].name, resp.status, cases[i].status)
		}
		var d struct{ Error, Reason string }
		if err := json.Unmarshal([]byte(resp.body), &d); err != nil || d.Reason != cases[i].reason {
			t.Errorf("%s: body %q, want the JSON denial with reason %s", cases[i].name, resp.body, cases[i].reason)
		}
	}
	var reasons []string
	for _, e := range r.only(audit.EventRequest) {
		reasons = append(reasons, e.Reason)
		if e.Decision != audit.DecisionDeny {
			t.Errorf("request event %s", e.fields)
		}
	}
	if len(reasons) != len(cases) {
		t.Fatalf("request events %v, want one per case; log:\n%s", reasons, r.dump())
	}
	for i, c := range cases {
		if reasons[i] != c.reason {
			t.Errorf("%s audited as %s, want %s", c.name, reasons[i], c.reason)
		}
	}
	// A chunked head goes upstream before its body is read, so the
	// server may see the chunk_overflow case begin (and never end); it
	// must never see the hidden request.
	for _, seen := range echo.hosts() {
		if !strings.HasPrefix(seen, "/a ") {
			t.Errorf("the server got %q", seen)
		}
	}
}
