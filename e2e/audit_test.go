package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/audit"
)

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TestAuditLog: one sandbox, three attempts (allowed GET, denied GET,
// denied CONNECT): the log is start, one decision per attempt with the
// right decision, reason and rule, then exit, all under one sandbox id.
func TestAuditLog(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		hostPort := fmt.Sprintf("127.0.0.1:%d", srv.port)
		script := strings.Join([]string{
			"curl -sS -o /dev/null --noproxy '' http://" + hostPort + "/a",
			"curl -sS -o /dev/null http://" + deniedHost + "/b",
			"curl -sS -o /dev/null https://" + deniedHost + "/c",
			"exit 0",
		}, "; ")
		command := []string{"sh", "-c", script}
		r := sb.run(t, []string{"--allow", hostPort}, command...)
		r.wantCode(t, 0)

		got := r.wantDecisions(t,
			decision{
				Event: audit.EventRequest, Decision: audit.DecisionAllow, Reason: "rule_allow", Rule: "--allow " + hostPort,
				Proto: audit.ProtoHTTP, Method: "GET", Host: "127.0.0.1", Port: srv.port, Path: "/a",
				Status: 200, Dst: hostPort,
			},
			decision{
				Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "no_matching_rule",
				Proto: audit.ProtoHTTP, Method: "GET", Host: deniedHost, Port: 80, Path: "/b", Status: 403,
			},
			decision{
				Event: audit.EventConnect, Decision: audit.DecisionDeny, Reason: "no_matching_rule",
				Proto: audit.ProtoConnect, Method: "CONNECT", Host: deniedHost, Port: 443, Status: 403,
			},
		)
		var conns []uint64
		for _, e := range got {
			if e.Conn == 0 || slices.Contains(conns, e.Conn) {
				t.Errorf("attempt has conn %d; want a fresh non-zero id (earlier: %v)", e.Conn, conns)
			}
			conns = append(conns, e.Conn)
		}

		start := r.log[0]
		if start.Event.Event != audit.EventStart {
			t.Fatalf("first event is %q, want start; log:\n%s", start.Event.Event, r.dump())
		}
		if !slices.Equal(start.Command, command) {
			t.Errorf("start command %q, want %q", start.Command, command)
		}
		if !sha256Hex.MatchString(start.PolicySHA256) {
			t.Errorf("start policy_sha256 %q, want 64 hex digits", start.PolicySHA256)
		}
		r.wantExit(t, 0)

		for i, e := range r.log {
			if e.Sandbox == "" || e.Sandbox != start.Sandbox {
				t.Errorf("event %d has sandbox %q, want %q", i, e.Sandbox, start.Sandbox)
			}
			if e.Time.IsZero() || !strings.HasSuffix(string(e.fields[audit.FieldTime]), `Z"`) {
				t.Errorf("event %d has time %s, want RFC 3339 in UTC", i, e.fields[audit.FieldTime])
			}
			if i > 0 && e.Time.Before(r.log[i-1].Time) {
				t.Errorf("event %d is earlier than event %d", i, i-1)
			}
		}
	})
}

// TestAuditPolicyHash: policy_sha256 names the effective policy: the same
// for the same rules, different when a rule changes.
func TestAuditPolicyHash(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		hash := func(flags ...string) string {
			t.Helper()
			r := sb.run(t, flags, "true")
			r.wantCode(t, 0)
			starts := r.only(audit.EventStart)
			if len(starts) != 1 {
				t.Fatalf("%d start events, want 1; log:\n%s", len(starts), r.dump())
			}
			return starts[0].PolicySHA256
		}
		a, again, b := hash("--allow", "a.example"), hash("--allow", "a.example"), hash("--allow", "b.example")
		if a != again {
			t.Errorf("same policy, different hashes: %s, %s", a, again)
		}
		if a == b {
			t.Errorf("different policies, same hash %s", a)
		}
	})
}

// TestAuditTunnelOpenAtExit: the command exits while a tunnel it opened is
// still open. osandbox ends what the command left running and closes the
// tunnel, and the log has its close event,
// with every byte count present, before the exit event.
func TestAuditTunnelOpenAtExit(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newHoldingServer(t, sb.path("held"))
		hostPort := fmt.Sprintf("127.0.0.1:%d", srv.port)
		script := fmt.Sprintf("curl -sS -p --noproxy '' http://%s%s >/dev/null 2>&1 & "+
			"while [ ! -e %s ]; do sleep 0.01; done; exit 5", hostPort, holdPath, srv.held)
		r := sb.run(t, []string{"--allow", hostPort}, "sh", "-c", script)
		r.wantCode(t, 5)
		got := r.wantDecisions(t, decision{
			Event: audit.EventConnect, Decision: audit.DecisionAllow, Reason: "rule_allow", Rule: "--allow " + hostPort,
			Proto: audit.ProtoConnect, Method: "CONNECT", Host: "127.0.0.1", Port: srv.port,
			Status: 200, Dst: hostPort,
		})
		closes := r.only(audit.EventClose)
		if len(closes) != 1 || closes[0].Conn != got[0].Conn {
			t.Fatalf("want one close event for conn %d; log:\n%s", got[0].Conn, r.dump())
		}
		c := closes[0]
		for _, f := range []string{audit.FieldBytesUp, audit.FieldBytesDown, audit.FieldDurationMS} {
			if !c.has(f) {
				t.Errorf("close event lacks %s: %s", f, c.fields)
			}
		}
		// The command's leftovers (the backgrounded curl) are killed when it
		// exits; the server may answer the half-closed tunnel before the
		// proxy closes it, so bytes_down may be 0 or the answer's size.
		if c.BytesUp <= 0 || c.BytesDown < 0 {
			t.Errorf("close has bytes_up %d, bytes_down %d; want > 0 and >= 0", c.BytesUp, c.BytesDown)
		}
		r.wantExit(t, 5)
	})
}
