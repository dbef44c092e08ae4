package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/audit"
)

// TestCaptureRefusedFallback: on a kernel that refuses nftables (here a
// seccomp filter makes netfilter netlink sockets fail with EPERM, as a
// kernel without nf_tables does), osandbox warns that capture is off and
// runs the command with the proxy alone. The proxy works; a connection
// that skips it fails at once (no route out, not a wait for an answer that
// never comes) and nothing about it reaches the proxy or the audit log.
func TestCaptureRefusedFallback(t *testing.T) {
	wrapper := helperBinary(t, "nonetfilter")
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		hostPort := fmt.Sprintf("127.0.0.1:%d", srv.port)
		sb.wrap = wrapper
		defer func() { sb.wrap = "" }()
		// 192.0.2.10 is only ever tried inside the sandbox's namespace,
		// which has no interface but lo.
		script := fmt.Sprintf(`curl -sS --noproxy '' http://%[1]s/via-proxy; echo "proxy=$?"
start=$(date +%%s%%N)
curl -sS --noproxy '*' --max-time 10 http://192.0.2.10:%[2]d/direct 2>/dev/null; echo "direct=$?"
echo "direct_ms=$(( ($(date +%%s%%N) - start) / 1000000 ))"`, hostPort, srv.port)
		r := sb.run(t, []string{"--allow", hostPort}, "sh", "-c", script)
		r.wantCode(t, 0)
		if !strings.Contains(r.stderr, "transparent capture is off") {
			t.Errorf("no warning that capture is off; stderr:\n%s", r.stderr)
		}
		if !strings.Contains(r.stdout, body("/via-proxy")+"proxy=0") {
			t.Errorf("the proxy did not work: %q", r.stdout)
		}
		if !strings.Contains(r.stdout, "direct=7") {
			t.Errorf("the direct connection did not fail to connect (curl exit 7): %q", r.stdout)
		}
		var ms int
		if i := strings.Index(r.stdout, "direct_ms="); i < 0 {
			t.Errorf("no timing in %q", r.stdout)
		} else if _, err := fmt.Sscanf(r.stdout[i:], "direct_ms=%d", &ms); err != nil || ms > 2000 {
			t.Errorf("the direct connection took %d ms (%v) to fail, want it at once", ms, err)
		}
		for _, e := range r.only(audit.EventConnect, audit.EventRequest, audit.EventDNS) {
			if e.Event.Event != audit.EventRequest || e.Path != "/via-proxy" {
				t.Errorf("audit event %s: nothing but the proxied request should reach the proxy", e.fields)
			}
		}
		if n := srv.hits.Load(); n != 1 {
			t.Errorf("server got %d requests, want 1", n)
		}

		// doctor sees the same kernel and says what falls back.
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		defer cancel()
		cmd := osandboxCmd(ctx, sb.user, sb.dir, "doctor", "--json")
		cmd.Path, cmd.Args = wrapper, append([]string{wrapper, bin}, cmd.Args[1:]...)
		out, err := cmd.Output()
		var report struct {
			RunWorks bool `json:"run_works"`
			Checks   []struct{ Name, Status string }
		}
		if err != nil || json.Unmarshal(out, &report) != nil || !report.RunWorks {
			t.Fatalf("doctor --json: %v\n%s", err, out)
		}
		found := false
		for _, c := range report.Checks {
			if strings.Contains(c.Name, "nf_tables") {
				found = true
				if c.Status != "falls back" {
					t.Errorf("doctor: %q is %q, want \"falls back\"", c.Name, c.Status)
				}
			}
		}
		if !found {
			t.Errorf("doctor has no nf_tables check: %s", out)
		}
	})
}
