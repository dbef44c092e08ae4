package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const examplePolicy = `version: 1
allow:
  - name: github-read
    hosts: [api.github.com]
    ports: [443]
    http:
      - methods: [GET, HEAD]
        paths: ["/repos/**", /user]
  - name: local
    hosts: [127.0.0.1]
    ports: [8080]
deny:
  - name: no-gist-writes
    hosts: [api.github.com]
    http:
      - methods: [POST]
        paths: ["/gists/**"]
`

func TestPolicyCheck(t *testing.T) {
	good := writeTemp(t, "good.yaml", examplePolicy)
	code, out, errOut := cliRun(t, "", "policy", "check", good)
	if code != 0 || errOut != "" || out != good+": ok: 2 allow rules, 1 deny rules, 0 allow_private ranges\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	bad := writeTemp(t, "bad.yaml", "version: 1\nallow:\n  - hosts: [\"a.*.b\"]\n    ports: [0]\n")
	code, out, errOut = cliRun(t, "", "policy", "check", bad)
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	wantErrorLines(t, errOut)
	if n := strings.Count(errOut, "\n"); n != 2 || !strings.Contains(errOut, bad+":3:") || !strings.Contains(errOut, bad+":4:") {
		t.Errorf("want one line per problem with FILE:LINE:COL, got:\n%s", errOut)
	}
}

func TestPolicyExplain(t *testing.T) {
	p := writeTemp(t, "p.yaml", examplePolicy)
	cases := []struct {
		args []string
		want []string // lines or fragments, in order
	}{
		{[]string{p, "https://api.github.com/repos/a/b"}, []string{
			"target:     GET /repos/a/b on api.github.com:443\n",
			`decision:   allow (rule_allow) by allow rule "github-read"` + "\n",
			"connection: a CONNECT to api.github.com:443 is let through and inspected at L7",
			"rules that name api.github.com:\n",
			`  deny[0] "no-gist-writes": no match: host matches "api.github.com", port 443, but no http entry matches GET /repos/a/b`,
			`  allow[0] "github-read": DECIDES: host matches "api.github.com", port 443: http[0] (methods GET HEAD, paths /repos/** /user) matches GET /repos/a/b`,
			"ssrf:       api.github.com is a name",
		}},
		{[]string{"--method", "post", p, "https://api.github.com/gists/1"}, []string{
			`decision:   deny (rule_deny) by deny rule "no-gist-writes"`,
			`  deny[0] "no-gist-writes": DECIDES:`,
		}},
		{[]string{p, "evil.example:443"}, []string{
			"target:     CONNECT evil.example:443\n",
			"decision:   deny (no_matching_rule): no allow rule matches, so the default (deny) applies\n",
			"rules:      none names evil.example\n",
		}},
		{[]string{p, "http://2130706433:8080/"}, []string{
			"target:     GET / on 127.0.0.1:8080\n",
			`  allow[1] "local": DECIDES:`,
			`ssrf:       127.0.0.1 is a loopback address; the SSRF guard dials it because rule "local" names 127.0.0.1/32`,
		}},
		{[]string{p, "[::ffff:10.0.0.1]:80"}, []string{
			"target:     CONNECT 10.0.0.1:80\n",
			"ssrf:       10.0.0.1 is a private (RFC 1918) address: even with an allow rule, the SSRF guard refuses it",
		}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[len(c.args)-1:], ""), func(t *testing.T) {
			code, out, errOut := cliRun(t, "", append([]string{"policy", "explain"}, c.args...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			rest := out
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (in order):\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
		})
	}
	code, _, errOut := cliRun(t, "", "policy", "explain", p, "ftp://x/")
	if code != 2 || !strings.Contains(errOut, `scheme "ftp"`) {
		t.Errorf("bad target: exit %d, stderr %q", code, errOut)
	}
}

func TestPolicySchemaCommand(t *testing.T) {
	code, out, _ := cliRun(t, "", "policy", "schema")
	if code != 0 || out != string(policies.JSONSchema()) {
		t.Errorf("exit %d; stdout is not the embedded schema", code)
	}
}

// learnLog is what `run --learn` writes for: a forward GET to a.test, a
// blind CONNECT to b.test, and an inspected tunnel (under a policy run)
// with its requests and an empty second tunnel to the same place.
const learnLog = `{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"start","command":["sh"],"policy_sha256":"x"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"request","conn":1,"decision":"allow","reason":"learn_mode","proto":"http","method":"GET","host":"a.test","port":8080,"path":"/one","status":200,"dst":"127.0.0.1:8080"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"connect","conn":2,"decision":"allow","reason":"learn_mode","proto":"connect","method":"CONNECT","host":"b.test","port":8443,"status":200,"dst":"127.0.0.1:8443"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"close","conn":2,"proto":"connect","host":"b.test","port":8443,"bytes_up":1,"bytes_down":2,"duration_ms":3}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"connect","conn":3,"decision":"allow","reason":"rule_allow","rule":"api","proto":"connect","method":"CONNECT","host":"api.example","port":443,"status":200,"dst":"93.184.216.34:443"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"request","conn":3,"decision":"allow","reason":"rule_allow","rule":"api","proto":"https","method":"GET","host":"api.example","port":443,"path":"/v1/x","status":200,"dst":"93.184.216.34:443"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"request","conn":3,"decision":"deny","reason":"no_matching_rule","proto":"https","method":"DELETE","host":"api.example","port":443,"path":"/v1/x","status":403}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"connect","conn":4,"decision":"allow","reason":"rule_allow","rule":"api","proto":"connect","method":"CONNECT","host":"api.example","port":443,"status":200,"dst":"93.184.216.34:443"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"request","conn":5,"decision":"deny","reason":"private_address","proto":"http","method":"GET","host":"c.test","port":80,"path":"/","status":403}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"dns","decision":"allow","reason":"learn_mode","proto":"dns","name":"d.test","qtype":"A"}
{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"exit","exit_code":0}
`

func TestSeenInLog(t *testing.T) {
	events, err := audit.ReadAll(strings.NewReader(learnLog))
	if err != nil {
		t.Fatal(err)
	}
	lo, pub := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("93.184.216.34")
	want := []policies.Seen{
		{Host: "a.test", Port: 8080, Method: "GET", Path: "/one", Dst: lo},
		{Host: "b.test", Port: 8443, Dst: lo},
		{Host: "api.example", Port: 443, Method: "GET", Path: "/v1/x", Dst: pub},
	}
	got := seenInLog(events, false)
	if len(got) != len(want) {
		t.Fatalf("seen %+v\nwant %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("seen[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	withDenied := seenInLog(events, true)
	if len(withDenied) != 4 || withDenied[3].Method != "DELETE" {
		t.Errorf("--include-denied: %+v; want the DELETE too (and never the private_address denial)", withDenied)
	}
}

func TestPolicySuggest(t *testing.T) {
	code, out, errOut := cliRun(t, learnLog, "policy", "suggest", "-")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	p, err := policies.Parse([]byte(out), "suggested")
	if err != nil {
		t.Fatalf("suggested policy does not parse: %v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "# Suggested by `osandbox policy suggest`") {
		t.Errorf("no header comment:\n%s", out)
	}
	allow := []policies.Request{
		{Host: "a.test", Port: 8080, Method: "GET", Path: "/one"},
		{Host: "b.test", Port: 8443},
		{Host: "api.example", Port: 443, Method: "GET", Path: "/v1/x"},
	}
	deny := []policies.Request{
		{Host: "a.test", Port: 8080, Method: "GET", Path: "/two"},
		{Host: "api.example", Port: 443, Method: "DELETE", Path: "/v1/x"},
		{Host: "c.test", Port: 80},
		{Host: "d.test", Port: 443},
	}
	for _, r := range allow {
		if d := p.Decide(r); d.Action != policies.Allow {
			t.Errorf("%+v denied (%s)\n%s", r, d.Reason, out)
		}
	}
	for _, r := range deny {
		if d := p.Decide(r); d.Action != policies.Deny {
			t.Errorf("%+v allowed by %q\n%s", r, d.Rule, out)
		}
	}
	if !p.AddrAllowed(p.Decide(allow[0]), netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("a.test resolved to 127.0.0.1 in the log, but the guard would refuse it:\n%s", out)
	}

	// From a file too, and the sample log of the audit package.
	code, out, errOut = cliRun(t, "", "policy", "suggest", filepath.Join("audit", "testdata", "export", "run.jsonl"))
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if _, err := policies.Parse([]byte(out), "suggested"); err != nil || !bytes.Contains([]byte(out), []byte(`upgrade: ["websocket"]`)) {
		t.Errorf("%v\n%s", err, out)
	}
}
