package policies

import (
	"strings"
	"testing"
)

// explainPolicy is the README's example policy, plus rules that exercise
// the SSRF notes.
const explainPolicy = `version: 1
allow:
  - name: npm
    hosts: [registry.npmjs.org]
    ports: [443]
  - name: github-read
    hosts: [api.github.com]
    ports: [443]
    http:
      - methods: [GET, HEAD]
        paths: ["/repos/**", /user]
  - name: chat
    hosts: [chat.example.com]
    http:
      - methods: [GET]
        paths: ["/socket/**"]
        upgrade: [websocket]
  - name: local
    hosts: [127.0.0.1]
    ports: [8080]
  - name: lan
    hosts: [10.0.0.5, 192.168.0.0/16]
    ports: [80]
deny:
  - name: no-gist-writes
    hosts: [api.github.com]
    http:
      - methods: [POST, PATCH, DELETE]
        paths: ["/gists/**"]
allow_private: [192.168.1.0/24]
`

func TestExplain(t *testing.T) {
	p, err := Parse([]byte(explainPolicy), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		target   string
		method   string
		action   Action
		reason   Reason
		deciding string   // "list[i]" of the deciding step; "" for none
		steps    []string // "list[i] match|miss" for every step, in order
		why      string   // substring of the deciding (or only) step's Why
		inspect  bool     // Conn.Inspect
		ssrf     string   // substring of the SSRF note; "" = no note
	}{
		{
			name: "connection-level allow", target: "registry.npmjs.org:443",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[0]", steps: []string{"allow[0] match"},
			why: "connection-level rule", ssrf: "is a name: the proxy resolves it",
		},
		{
			name: "wrong port", target: "registry.npmjs.org:80",
			action: Deny, reason: ReasonNoMatchingRule, steps: []string{"allow[0] miss"},
			why: "port 80 is not in its ports [443]",
		},
		{
			name: "no rule names the host", target: "https://evil.example/x",
			action: Deny, reason: ReasonNoMatchingRule,
		},
		{
			name: "L7 allow through an http entry", target: "https://api.github.com/repos/a/b?token=x",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[1]", inspect: true,
			steps: []string{"deny[0] miss", "allow[1] match"}, why: "http[0] (methods GET HEAD, paths /repos/** /user) matches GET /repos/a/b",
			ssrf: "dials public addresses, and private ones only in 192.168.1.0/24",
		},
		{
			name: "deny wins", target: "https://api.github.com/gists/1", method: "post",
			action: Deny, reason: ReasonRuleDeny, deciding: "deny[0]", inspect: true,
			steps: []string{"deny[0] match", "allow[1] miss"}, why: "matches POST /gists/1",
		},
		{
			name: "connection to an inspected host", target: "api.github.com:443",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[1]", inspect: true,
			steps: []string{"deny[0] miss", "allow[1] match"}, why: "inspected at L7", ssrf: "is a name",
		},
		{
			name: "path cleaned like the proxy does", target: "https://api.github.com/repos/../gists/./1", method: "DELETE",
			action: Deny, reason: ReasonRuleDeny, deciding: "deny[0]", inspect: true,
			steps: []string{"deny[0] match", "allow[1] miss"}, why: "matches DELETE /gists/1",
		},
		{
			name: "websocket allowed", target: "ws://chat.example.com/socket/room",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[2]", inspect: true,
			steps: []string{"allow[2] match"}, why: "with upgrade websocket", ssrf: "is a name",
		},
		{
			name: "upgrade not allowed names the rule", target: "wss://api.github.com/repos/x",
			action: Deny, reason: ReasonUpgradeNotAllowed, deciding: "allow[1]", inspect: true,
			steps: []string{"deny[0] miss", "allow[1] miss"}, why: `does not permit upgrade "websocket"`,
		},
		{
			name: "IP literal named by the rule", target: "http://0x7f.1:8080/",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[3]", steps: []string{"allow[3] match"},
			ssrf: `127.0.0.1 is a loopback address; the SSRF guard dials it because rule "local" names 127.0.0.1/32`,
		},
		{
			name: "loopback nobody allows", target: "127.0.0.1:9000",
			action: Deny, reason: ReasonNoMatchingRule, steps: []string{"allow[3] miss"},
			ssrf: "even with an allow rule, the SSRF guard refuses it",
		},
		{
			name: "metadata endpoint", target: "http://169.254.169.254/latest/meta-data/",
			action: Deny, reason: ReasonNoMatchingRule, ssrf: "the cloud metadata endpoint",
		},
		{
			name: "private address named by a CIDR", target: "192.168.1.9:80",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[4]", steps: []string{"allow[4] match"},
			ssrf: `rule "lan" names 192.168.0.0/16`,
		},
		{
			name: "denied private address in allow_private", target: "192.168.1.9:443",
			action: Deny, reason: ReasonNoMatchingRule, steps: []string{"allow[4] miss"},
			ssrf: "allow_private lets the proxy dial it once a rule allows it",
		},
		{
			name: "IPv4-mapped IPv6 is the IPv4 address", target: "[::ffff:10.0.0.5]:80",
			action: Allow, reason: ReasonRuleAllow, deciding: "allow[4]", steps: []string{"allow[4] match"},
			ssrf: `10.0.0.5 is a private (RFC 1918) address; the SSRF guard dials it because rule "lan" names 10.0.0.5/32`,
		},
		{
			name: "public IP: no note", target: "8.8.8.8:443", action: Deny, reason: ReasonNoMatchingRule,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := ParseTarget(c.target, c.method)
			if err != nil {
				t.Fatal(err)
			}
			x := p.Explain(r)
			if d := p.Decide(r); x.Decision.Action != d.Action || x.Decision.Reason != d.Reason || x.Decision.Rule != d.Rule {
				t.Errorf("Explain decided %+v, Decide %+v", x.Decision, p.Decide(r))
			}
			if x.Decision.Action != c.action || x.Decision.Reason != c.reason {
				t.Errorf("decision %s (%s), want %s (%s)", x.Decision.Action, x.Decision.Reason, c.action, c.reason)
			}
			if x.Conn.Inspect != c.inspect {
				t.Errorf("Conn.Inspect %v, want %v", x.Conn.Inspect, c.inspect)
			}
			var steps []string
			deciding, why := "", ""
			for _, s := range x.Steps {
				tag := "miss"
				if s.Match {
					tag = "match"
				}
				id := s.List + "[" + string(rune('0'+s.Index)) + "]"
				steps = append(steps, id+" "+tag)
				if s.Deciding {
					deciding, why = id, s.Why
				}
			}
			if strings.Join(steps, ", ") != strings.Join(c.steps, ", ") {
				t.Errorf("steps %q, want %q", steps, c.steps)
			}
			if deciding != c.deciding {
				t.Errorf("deciding step %q, want %q", deciding, c.deciding)
			}
			if why == "" && len(x.Steps) == 1 {
				why = x.Steps[0].Why
			}
			if !strings.Contains(why, c.why) {
				t.Errorf("why %q lacks %q", why, c.why)
			}
			if (c.ssrf == "") != (x.SSRF == "") || !strings.Contains(x.SSRF, c.ssrf) {
				t.Errorf("SSRF note %q, want one containing %q", x.SSRF, c.ssrf)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in, method string
		want       Request
		err        bool
	}{
		{in: "example.com:443", want: Request{Host: "example.com", Port: 443}},
		{in: "example.com:443", method: "get", want: Request{Host: "example.com", Port: 443, Method: "GET", Path: "/"}},
		{in: "[::1]:8080", want: Request{Host: "::1", Port: 8080}},
		{in: "http://example.com", want: Request{Host: "example.com", Port: 80, Method: "GET", Path: "/"}},
		{in: "https://example.com:8443/a//b/?q=1", method: "PUT", want: Request{Host: "example.com", Port: 8443, Method: "PUT", Path: "/a/b/"}},
		{in: "wss://chat.example/ws", want: Request{Host: "chat.example", Port: 443, Method: "GET", Path: "/ws", Upgrade: "websocket"}},
		{in: "example.com", err: true},
		{in: "ftp://example.com/", err: true},
		{in: "example.com:99999", err: true},
		{in: "http://exa mple.com/", err: true},
		{in: "bad_host!:80", err: true},
	}
	for _, c := range cases {
		got, err := ParseTarget(c.in, c.method)
		if (err != nil) != c.err {
			t.Errorf("ParseTarget(%q): err %v, want error %v", c.in, err, c.err)
			continue
		}
		if !c.err && got != c.want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}
