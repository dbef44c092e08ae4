package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// cliResult is what a non-run command left behind.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs `osandbox ARGS...` as u in dir (not a sandboxed run: the
// tooling commands) with stdin.
func runCLI(t *testing.T, u user, dir, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := osandboxCmd(ctx, u, dir, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("osandbox %q: %v", args, err)
	}
	return cliResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errOut.String()}
}

// TestLearnSuggestRoundTrip: a client runs under --learn against two
// local servers reached by name (a.e2e.test over plain HTTP, b.e2e.test
// over HTTPS through a blind tunnel); `policy suggest` turns the log into a
// policy; under that policy the same client succeeds, while another host,
// and another path on the L7-learned host, are denied.
func TestLearnSuggestRoundTrip(t *testing.T) {
	const hostA, hostB, hostC = "a.e2e.test", "b.e2e.test", "c.e2e.test"
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srvA := newServer(t)
		srvB, certPEM := newTLSServer(t, hostB)
		ca := sb.file(t, "ca.pem", certPEM)
		urlA := fmt.Sprintf("http://%s:%d/x", hostA, srvA.port)
		urlB := fmt.Sprintf("https://%s:%d/y", hostB, srvB.port)
		client := []string{"sh", "-c", fmt.Sprintf("curl -sS -f %s && curl -sS -f --cacert %s %s", urlA, ca, urlB)}
		pins := []string{"--resolve", hostA + ":127.0.0.1", "--resolve", hostB + ":127.0.0.1", "--resolve", hostC + ":127.0.0.1"}

		// Learn mode still has the SSRF guard: the servers are on loopback.
		learnPolicy := sb.file(t, "learn.yaml", "version: 1\nallow_private: [127.0.0.1/32]\n")
		learn := sb.run(t, append([]string{"--learn", "--policy", learnPolicy}, pins...), client...)
		learn.wantCode(t, 0)
		if want := body("/x") + body("/y"); learn.stdout != want {
			t.Fatalf("learn run printed %q, want %q\nstderr:\n%s", learn.stdout, want, learn.stderr)
		}
		learn.wantDecisions(t,
			decision{Event: audit.EventRequest, Decision: audit.DecisionAllow, Reason: "learn_mode", Proto: audit.ProtoHTTP,
				Method: "GET", Host: hostA, Port: srvA.port, Path: "/x", Status: 200, Dst: fmt.Sprintf("127.0.0.1:%d", srvA.port)},
			decision{Event: audit.EventConnect, Decision: audit.DecisionAllow, Reason: "learn_mode", Proto: audit.ProtoConnect,
				Method: "CONNECT", Host: hostB, Port: srvB.port, Status: 200, Dst: fmt.Sprintf("127.0.0.1:%d", srvB.port)},
		)

		sug := runCLI(t, sb.user, sb.dir, "", "policy", "suggest", sb.path(fmt.Sprintf("audit-%d.jsonl", sb.runs)))
		if sug.code != 0 || sug.stderr != "" {
			t.Fatalf("policy suggest: exit %d\n%s", sug.code, sug.stderr)
		}
		if _, err := policies.Parse([]byte(sug.stdout), "suggested"); err != nil {
			t.Fatalf("suggested policy does not parse: %v\n%s", err, sug.stdout)
		}
		for _, want := range []string{
			fmt.Sprintf(`hosts: ["%s"]`+"\n    ports: [%d]\n    http:\n      - methods: [\"GET\"]\n        paths: [\"/x\"]\n", hostA, srvA.port),
			fmt.Sprintf(`hosts: ["%s"]`+"\n    ports: [%d]\n", hostB, srvB.port),
			`allow_private: ["127.0.0.1/32"]`,
		} {
			if !strings.Contains(sug.stdout, want) {
				t.Errorf("suggested policy lacks %q:\n%s", want, sug.stdout)
			}
		}
		policy := sb.file(t, "suggested.yaml", sug.stdout)
		if chk := runCLI(t, sb.user, sb.dir, "", "policy", "check", policy); chk.code != 0 {
			t.Errorf("policy check on the suggestion: exit %d: %s", chk.code, chk.stderr)
		}

		flags := append([]string{"--policy", policy}, pins...)
		again := sb.run(t, flags, client...)
		again.wantCode(t, 0)
		if want := body("/x") + body("/y"); again.stdout != want {
			t.Errorf("under the suggested policy the client printed %q, want %q\nstderr:\n%s", again.stdout, want, again.stderr)
		}
		for _, e := range again.decisions() {
			if e.Decision != audit.DecisionAllow || e.Reason != "rule_allow" || (e.Rule != hostA && e.Rule != hostB) {
				t.Errorf("decision %+v, want allow by rule %s or %s", decisionOf(e), hostA, hostB)
			}
		}

		other := fmt.Sprintf("for u in http://%s:%d/x http://%s:%d/other; do curl -s -o /dev/null -w '%%{http_code} ' $u; done",
			hostC, srvA.port, hostA, srvA.port)
		denied := sb.run(t, flags, "sh", "-c", other)
		denied.wantCode(t, 0)
		if denied.stdout != "403 403 " {
			t.Errorf("another host and another path: %q, want \"403 403 \"\nstderr:\n%s", denied.stdout, denied.stderr)
		}
		denied.wantDecisions(t,
			decision{Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "no_matching_rule", Proto: audit.ProtoHTTP,
				Method: "GET", Host: hostC, Port: srvA.port, Path: "/x", Status: 403},
			decision{Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "no_matching_rule", Proto: audit.ProtoHTTP,
				Method: "GET", Host: hostA, Port: srvA.port, Path: "/other", Status: 403},
		)
	})
}

// TestAuditToolsOnRealLog: export and summary on the log of a real run
// with an allowed request, an allowed tunnel and two denials.
func TestAuditToolsOnRealLog(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newServer(t)
		hostPort := fmt.Sprintf("127.0.0.1:%d", srv.port)
		script := strings.Join([]string{
			"curl -sS -o /dev/null --noproxy '' http://" + hostPort + "/a",
			"curl -sS -o /dev/null -p --noproxy '' http://" + hostPort + "/b",
			"curl -sS -o /dev/null http://" + deniedHost + "/c",
			"curl -sS -o /dev/null https://" + deniedHost + "/d",
			"exit 0",
		}, "; ")
		r := sb.run(t, []string{"--allow", hostPort}, "sh", "-c", script)
		r.wantCode(t, 0)
		logPath := sb.path(fmt.Sprintf("audit-%d.jsonl", sb.runs))

		ocsf := runCLI(t, sb.user, sb.dir, "", "audit", "export", "--format", "ocsf", logPath)
		if ocsf.code != 0 {
			t.Fatalf("export ocsf: exit %d: %s", ocsf.code, ocsf.stderr)
		}
		lines := strings.Split(strings.TrimSpace(ocsf.stdout), "\n")
		if want := len(r.only(audit.EventConnect, audit.EventRequest, audit.EventUpgrade, audit.EventDNS, audit.EventClose)); len(lines) != want {
			t.Fatalf("%d OCSF objects, want %d\n%s", len(lines), want, ocsf.stdout)
		}
		for i, line := range lines {
			var o map[string]any
			if err := json.Unmarshal([]byte(line), &o); err != nil {
				t.Fatalf("object %d: %v", i, err)
			}
			required := []string{"class_uid", "category_uid", "type_uid", "activity_id", "severity_id", "time", "metadata", "src_endpoint", "dst_endpoint"}
			switch o["class_uid"] {
			case 4002.0:
				required = append(required, "http_request", "http_response")
			case 4001.0:
			default:
				t.Errorf("object %d has class_uid %v", i, o["class_uid"])
			}
			for _, k := range required {
				if _, ok := o[k]; !ok {
					t.Errorf("object %d (class %v) lacks %s: %s", i, o["class_uid"], k, line)
				}
			}
		}

		csv := runCLI(t, sb.user, sb.dir, "", "audit", "export", "--format", "csv", "--decision", "deny", logPath)
		if rows := strings.Count(csv.stdout, "\n"); csv.code != 0 || rows != 3 {
			t.Errorf("csv of denials: exit %d, %d lines, want a header and 2 rows\n%s", csv.code, rows, csv.stdout)
		}

		data, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		sum := runCLI(t, sb.user, sb.dir, string(data), "audit", "summary", "--json", "-")
		var targets []audit.Target
		if err := json.Unmarshal([]byte(sum.stdout), &targets); sum.code != 0 || err != nil {
			t.Fatalf("summary: exit %d, %v\n%s%s", sum.code, err, sum.stdout, sum.stderr)
		}
		byKey := map[string]audit.Target{}
		for _, tg := range targets {
			byKey[fmt.Sprintf("%s:%d", tg.Host, tg.Port)] = tg
		}
		if tg := byKey[hostPort]; tg.Allowed != 2 || tg.Denied != 0 || tg.BytesUp == 0 || tg.BytesDown == 0 {
			t.Errorf("%s: %+v, want 2 allowed and bytes both ways (the tunnel's close)", hostPort, tg)
		}
		if byKey[deniedHost+":80"].Denied != 1 || byKey[deniedHost+":443"].Denied != 1 {
			t.Errorf("denials: %+v", targets)
		}
		table := runCLI(t, sb.user, sb.dir, "", "audit", "summary", logPath)
		if table.code != 0 || !strings.HasPrefix(table.stdout, "HOST:PORT") || !strings.Contains(table.stdout, "3 targets: 2 allowed, 2 denied") {
			t.Errorf("summary table: exit %d\n%s%s", table.code, table.stdout, table.stderr)
		}
	})
}

// TestDoctor: where the sandbox works (requireSandbox passed), doctor says
// so and exits 0, as root and as nobody.
func TestCLIDoctor(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		r := runCLI(t, sb.user, sb.dir, "", "doctor", "--json")
		var report struct {
			RunWorks bool `json:"run_works"`
			Checks   []struct{ Name, Status, Fix string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || r.code != 0 || !report.RunWorks {
			t.Fatalf("doctor --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
		}
		if len(report.Checks) < 4 {
			t.Errorf("%d checks, want user namespaces, nf_tables, SO_ORIGINAL_DST and Landlock at least", len(report.Checks))
		}
		for _, c := range report.Checks {
			switch c.Status {
			case "works", "falls back", "missing":
			default:
				t.Errorf("check %q has status %q", c.Name, c.Status)
			}
		}
		text := runCLI(t, sb.user, sb.dir, "", "doctor")
		if text.code != 0 || !strings.Contains(text.stdout, "run: works here") {
			t.Errorf("doctor: exit %d\n%s%s", text.code, text.stdout, text.stderr)
		}
	})
}

// TestCompletion: the binary answers the completion scripts' questions,
// and the bash script completes subcommands but nothing after "--".
func TestCLICompletion(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--generate-bash-completion"}, "run policy audit doctor completion version"},
		{[]string{"policy", "--generate-bash-completion"}, "check explain suggest schema"},
		{[]string{"audit", "--generate-bash-completion"}, "export summary"},
		{[]string{"audit", "export", "--f", "--generate-bash-completion"}, "--format"},
	}
	for _, c := range cases {
		r := runCLI(t, user{name: "self"}, "/", "", c.args...)
		if got := strings.Join(strings.Fields(r.stdout), " "); r.code != 0 || got != c.want {
			t.Errorf("%q: exit %d, %q; want %q", c.args, r.code, got, c.want)
		}
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	script := runCLI(t, user{name: "self"}, "/", "", "completion", "bash").stdout
	f := filepath.Join(t.TempDir(), "osandbox.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	probe := fmt.Sprintf(`source %s
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _osandbox_complete; echo "${COMPREPLY[*]}"; }
complete_words %s pol
complete_words %s audit ""
complete_words %s run -- cu
`, f, bin, bin, bin)
	out, err := exec.Command("bash", "-c", probe).CombinedOutput()
	if want := "policy\nexport summary\n\n"; err != nil || string(out) != want {
		t.Errorf("bash completion: %v: %q, want %q", err, out, want)
	}
}

// TestVersion: a build with VCS information prints its revision.
func TestCLIVersion(t *testing.T) {
	plain := runCLI(t, user{name: "self"}, "/", "", "version")
	if plain.code != 0 || !regexp.MustCompile(`^osandbox \S+ revision .* go1\.\d+`).MatchString(plain.stdout) {
		t.Errorf("version: exit %d, %q", plain.code, plain.stdout)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: no VCS information to embed")
	}
	out := filepath.Join(t.TempDir(), "osandbox-vcs")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", out, ".")
	build.Dir = ".."
	if b, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build with VCS information here: %v\n%s", err, b)
	}
	v, err := exec.Command(out, "version").Output()
	if err != nil || !regexp.MustCompile(`^osandbox \S+ revision [0-9a-f]{40} `).Match(v) {
		t.Errorf("version of a VCS build: %v, %q; want the 40-hex revision", err, v)
	}
}
