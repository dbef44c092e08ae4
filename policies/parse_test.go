package policies

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// designExample is the policy of DESIGN 1.2, comments included.
const designExample = `version: 1
allow:
  - name: npm                       # every decision names the rule that made it
    hosts: [registry.npmjs.org]     # exact name | "*.example.com" (subdomains only)
                                    # | "**.example.com" (apex and subdomains) | IP | CIDR
    ports: [443]                    # default [80, 443]
  - name: github-read
    hosts: [api.github.com]
    ports: [443]
    http:                           # L7 rules: on a TLS port these turn on TLS interception
      - methods: [GET, HEAD]        # "*" = any method
        paths: ["/repos/**", /user] # "*" one segment, "**" any number of segments
  - name: chat
    hosts: [chat.example.com]
    http:
      - methods: [GET]
        paths: ["/socket/**"]
        upgrade: [websocket]        # Upgrade protocols this rule permits (default: none)
deny:                               # deny wins over allow
  - name: no-gist-writes
    hosts: [api.github.com]
    http:
      - methods: [POST, PATCH, DELETE]
        paths: ["/gists/**"]
allow_private: [127.0.0.1/32]       # private/loopback/link-local ranges the proxy may dial
`

// validPolicies parse without error; FuzzParse is seeded from them.
var validPolicies = []struct{ name, yaml string }{
	{"design example", designExample},
	{"minimal", "version: 1\n"},
	{"null lists", "version: 1\nallow:\ndeny:\nallow_private:\n"},
	{"flow style", `{version: 1, allow: [{hosts: ["*.a.com", "**.b.com"], ports: [8080]}]}`},
	{"addresses", "version: 1\nallow:\n  - hosts: [10.0.0.1, \"::1\", \"[fe80::1]\", 10.0.0.0/8, fd00::/8, \"::ffff:10.0.0.0/104\"]\n"},
	{"anchors", "version: 1\nallow:\n  - name: a\n    hosts: &gh [github.com, api.github.com]\n  - name: b\n    hosts: *gh\n    ports: [22]\n"},
	{"http defaults", "version: 1\nallow:\n  - hosts: [a.com]\n    http:\n      - methods: [get]\n      - paths: [/x, /y/*/z, /]\n      - upgrade: [WebSocket, h2c, \"*\"]\n"},
	{"trailing dots and case", "version: 1\nallow:\n  - hosts: [Example.COM., \"*.Sub.Example.com\"]\n"},
	{"unnamed rules", "version: 1\nallow:\n  - hosts: [a.com]\ndeny:\n  - hosts: [b.com]\n"},
	{"deny http without paths", "version: 1\ndeny:\n  - hosts: [a.com]\n    http: [{methods: [POST]}]\n"},
	{"allow_private forms", "version: 1\nallow_private: [127.0.0.1, 10.0.0.0/8, \"::1\", \"fd00::/8\"]\n"},
}

func TestParseDesignExample(t *testing.T) {
	p, err := Parse([]byte(designExample), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Policy{
		Allow: []Rule{
			{Name: "npm", Hosts: hosts(t, "registry.npmjs.org"), Ports: []int{443}},
			{Name: "github-read", Hosts: hosts(t, "api.github.com"), Ports: []int{443}, HTTP: []HTTPRule{
				{Methods: []string{"GET", "HEAD"}, Paths: []string{"/repos/**", "/user"}},
			}},
			{Name: "chat", Hosts: hosts(t, "chat.example.com"), Ports: []int{80, 443}, HTTP: []HTTPRule{
				{Methods: []string{"GET"}, Paths: []string{"/socket/**"}, Upgrade: []string{"websocket"}},
			}},
		},
		Deny: []Rule{
			{Name: "no-gist-writes", Hosts: hosts(t, "api.github.com"), Ports: []int{80, 443}, HTTP: []HTTPRule{
				{Methods: []string{"POST", "PATCH", "DELETE"}, Paths: []string{"/gists/**"}},
			}},
		},
		AllowPrivate: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		sha:          hashHex([]byte(designExample)),
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", p, want)
	}
}

func TestParseNormalises(t *testing.T) {
	cases := []struct {
		name, yaml string
		check      func(*Policy) any
		want       any
	}{
		{"unnamed allow", "version: 1\nallow:\n  - hosts: [a.com]\n  - hosts: [b.com]\n",
			func(p *Policy) any { return p.Allow[1].Name }, "allow[1]"},
		{"unnamed deny", "version: 1\ndeny:\n  - hosts: [a.com]\n",
			func(p *Policy) any { return p.Deny[0].Name }, "deny[0]"},
		{"default ports", "version: 1\nallow:\n  - hosts: [a.com]\n",
			func(p *Policy) any { return p.Allow[0].Ports }, []int{80, 443}},
		{"http defaults", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{upgrade: [WebSocket]}]\n",
			func(p *Policy) any { return p.Allow[0].HTTP[0] },
			HTTPRule{Methods: []string{"*"}, Paths: []string{"/**"}, Upgrade: []string{"websocket"}}},
		{"methods upper-cased", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{methods: [get, Post, \"*\"]}]\n",
			func(p *Policy) any { return p.Allow[0].HTTP[0].Methods }, []string{"GET", "POST", "*"}},
		{"hosts canonical", "version: 1\nallow:\n  - hosts: [Example.COM., \"**.A.b\", \"[::ffff:10.0.0.1]\", \"::ffff:10.0.0.0/104\"]\n",
			func(p *Policy) any { return hostStrings(p.Allow[0].Hosts) },
			[]string{"example.com", "**.a.b", "10.0.0.1", "10.0.0.0/8"}},
		{"alias expanded", "version: 1\nallow:\n  - {name: a, hosts: &h [x.com]}\n  - {name: b, hosts: *h}\n",
			func(p *Policy) any { return hostStrings(p.Allow[1].Hosts) }, []string{"x.com"}},
		{"allow_private single IP", "version: 1\nallow_private: [10.1.2.3, \"::1\"]\n",
			func(p *Policy) any { return p.AllowPrivate },
			[]netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("::1/128")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.yaml), "f.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.check(p); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	for _, tc := range validPolicies {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.yaml), "f.yaml"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// invalidPolicies fail to parse; pos is the "LINE:COL" of the first error
// and msg a fragment of its message. FuzzParse is seeded from them.
var invalidPolicies = []struct{ name, yaml, pos, msg string }{
	{"empty file", "", "1:1", `missing required field "version"`},
	{"comments only", "# nothing\n", "1:1", `missing required field "version"`},
	{"missing version", "allow: []\n", "1:1", `missing required field "version"`},
	{"version 2", "version: 2\n", "1:10", "unsupported policy version 2"},
	{"version string", "version: \"1\"\n", "1:10", `version: expected 1, got the string "1"`},
	{"version list", "version: [1]\n", "1:10", "version: expected 1, got a list"},
	{"top-level list", "- version: 1\n", "1:1", "policy: expected a mapping"},
	{"unknown top field", "version: 1\nallwo: []\n", "2:1", `unknown field "allwo" (want one of: version, allow, deny, allow_private)`},
	{"duplicate top field", "version: 1\nversion: 1\n", "2:1", `duplicate field "version" (first at line 1)`},
	{"merge key", "version: 1\nallow: [{hosts: [a.com], <<: {}}]\n", "2:26", "merge keys (<<) are not supported"},
	{"two documents", "version: 1\n---\nversion: 1\n", "2:1", "one YAML document"},
	{"syntax unclosed flow", "version: 1\nallow: [a\n", "2:1", "invalid YAML: did not find expected ',' or ']'"},
	{"syntax tab", "version: 1\nallow:\n\t- hosts: [a]\n", "3:1", "invalid YAML: found character that cannot start any token"},
	{"allow not a list", "version: 1\nallow: {hosts: [a.com]}\n", "2:8", "allow: expected a list, got a mapping"},
	{"rule not a mapping", "version: 1\nallow: [a.com]\n", "2:9", `allow[0]: expected a mapping with fields name, hosts, ports, http, got the string "a.com"`},
	{"unknown rule field", "version: 1\nallow:\n  - hosts: [a.com]\n    port: [443]\n", "4:5", `allow[0]: unknown field "port" (want one of: name, hosts, ports, http)`},
	{"duplicate rule field", "version: 1\nallow:\n  - hosts: [a.com]\n    hosts: [b.com]\n", "4:5", `duplicate field "hosts" (first at line 3)`},
	{"missing hosts", "version: 1\nallow:\n  - name: x\n    ports: [443]\n", "3:5", `allow[0]: missing required field "hosts"`},
	{"empty hosts", "version: 1\nallow:\n  - name: x\n    hosts: []\n", "4:5", "allow[0].hosts must not be empty"},
	{"hosts is a string", "version: 1\nallow:\n  - hosts: a.com\n", "3:12", `allow[0].hosts: expected a list, got the string "a.com"`},
	{"host is a number", "version: 1\nallow:\n  - hosts: [12]\n", "3:13", "allow[0].hosts: expected a string, got int 12"},
	{"bad glob star alone", "version: 1\nallow:\n  - hosts: [\"*\"]\n", "3:13", `bad glob "*"`},
	{"bad glob middle", "version: 1\nallow:\n  - hosts: [ok.com, \"a.*.com\"]\n", "3:21", `bad glob "a.*.com"`},
	{"bad glob suffix", "version: 1\nallow:\n  - hosts: [\"a*.com\"]\n", "3:13", `bad glob "a*.com"`},
	{"bad glob triple", "version: 1\nallow:\n  - hosts: [\"***.com\"]\n", "3:13", `bad glob "***.com"`},
	{"glob over a number", "version: 1\nallow:\n  - hosts: [\"*.10.0.0.1\"]\n", "3:13", "not a valid host name"},
	{"invalid host char", "version: 1\nallow:\n  - hosts: [\"exa mple.com\"]\n", "3:13", `invalid character ' ' in host pattern`},
	{"empty host", "version: 1\nallow:\n  - hosts: [\"\"]\n", "3:13", "empty host pattern"},
	{"host empty label", "version: 1\nallow:\n  - hosts: [a..com]\n", "3:13", `invalid host "a..com"`},
	{"host non-standard IP", "version: 1\nallow:\n  - hosts: [0x7f.1]\n", "3:13", "non-standard form; write 127.0.0.1"},
	{"CIDR host bits", "version: 1\nallow:\n  - hosts: [10.0.0.1/8]\n", "3:13", "did you mean 10.0.0.0/8?"},
	{"CIDR too long", "version: 1\nallow:\n  - hosts: [10.0.0.0/33]\n", "3:13", `invalid CIDR "10.0.0.0/33"`},
	{"port zero", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [443, 0]\n", "4:18", "port 0 out of range (1-65535)"},
	{"port too big", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [65536]\n", "4:13", "port 65536 out of range"},
	{"port negative", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [-1]\n", "4:13", "port -1 out of range"},
	{"port huge", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [99999999999999999999999]\n", "4:13", "expected a port number"},
	{"port string", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [\"443\"]\n", "4:13", `expected a port number (1-65535), got the string "443"`},
	{"port float", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [443.5]\n", "4:13", "got float 443.5"},
	{"port hex", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [0x1bb]\n", "4:13", "write port 0x1bb in decimal"},
	{"port leading zero", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [0443]\n", "4:13", "leading zero"},
	{"port octal", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: [0o17]\n", "4:13", "write port 0o17 in decimal"},
	{"ipv6 unquoted in flow list", "version: 1\nallow:\n  - hosts: [::1]\n", "3:1", "invalid YAML"},
	{"ports empty", "version: 1\nallow:\n  - hosts: [a.com]\n    ports: []\n", "4:5", "allow[0].ports must not be empty"},
	{"duplicate names", "version: 1\nallow:\n  - name: x\n    hosts: [a.com]\n  - name: x\n    hosts: [b.com]\n", "5:11", `duplicate rule name "x" (first at 3:11)`},
	{"duplicate names across lists", "version: 1\nallow:\n  - name: x\n    hosts: [a.com]\ndeny:\n  - name: x\n    hosts: [b.com]\n", "6:11", `duplicate rule name "x"`},
	{"name collides with default", "version: 1\nallow:\n  - name: allow[1]\n    hosts: [a.com]\n  - hosts: [b.com]\n", "5:5", `duplicate rule name "allow[1]"`},
	{"empty name", "version: 1\nallow:\n  - name: \"\"\n    hosts: [a.com]\n", "3:11", "allow[0].name must not be empty"},
	{"name is a number", "version: 1\nallow:\n  - name: 7\n    hosts: [a.com]\n", "3:11", "allow[0].name: expected a string, got int 7"},
	{"name control char", "version: 1\nallow:\n  - name: \"a\\tb\"\n    hosts: [a.com]\n", "3:11", "control character"},
	{"http empty", "version: 1\nallow:\n  - hosts: [a.com]\n    http: []\n", "4:5", "allow[0].http must not be empty (omit it for a connection-level rule)"},
	{"http not list", "version: 1\nallow:\n  - hosts: [a.com]\n    http: {methods: [GET]}\n", "4:11", "allow[0].http: expected a list, got a mapping"},
	{"unknown http field", "version: 1\nallow:\n  - hosts: [a.com]\n    http:\n      - method: [GET]\n", "5:9", `allow[0].http[0]: unknown field "method" (want one of: methods, paths, upgrade)`},
	{"bad method", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{methods: [GET, \"GE T\"]}]\n", "4:28", `invalid method "GE T"`},
	{"method with digit", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{methods: [GET1]}]\n", "4:23", `invalid method "GET1"`},
	{"methods empty", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{methods: []}]\n", "4:13", "allow[0].http[0].methods must not be empty"},
	{"path without slash", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{paths: [repos]}]\n", "4:21", `path pattern "repos" must start with "/"`},
	{"path bad glob", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{paths: [\"/a*\"]}]\n", "4:21", `bad glob segment "a*"`},
	{"path triple star", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{paths: [\"/***\"]}]\n", "4:21", `bad glob segment "***"`},
	{"path query", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{paths: [\"/a?b=1\"]}]\n", "4:21", "query or fragment"},
	{"path empty segment", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{paths: [\"/a//b\"]}]\n", "4:21", "empty segment"},
	{"path dot-dot", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{paths: [\"/a/../b\"]}]\n", "4:21", `".." segment`},
	{"bad upgrade", "version: 1\nallow:\n  - hosts: [a.com]\n    http: [{upgrade: [\"web socket\"]}]\n", "4:23", `invalid protocol "web socket"`},
	{"upgrade in deny", "version: 1\ndeny:\n  - hosts: [a.com]\n    http: [{methods: [GET], upgrade: [websocket]}]\n", "4:29", "upgrade is not supported in deny rules"},
	{"allow_private name", "version: 1\nallow_private: [example.com]\n", "2:17", `allow_private: "example.com" is not an IP address or CIDR`},
	{"allow_private bad CIDR", "version: 1\nallow_private: [10.0.0.1/8]\n", "2:17", "did you mean 10.0.0.0/8?"},
	{"allow_private not list", "version: 1\nallow_private: 10.0.0.0/8\n", "2:16", "allow_private: expected a list"},
	{"unknown tag", "version: 1\nallow:\n  - hosts: [!foo a.com]\n", "3:13", `expected a string, got "a.com" tagged !foo`},
}

func TestParseErrors(t *testing.T) {
	for _, tc := range invalidPolicies {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.yaml), "f.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", p)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with an error")
			}
			first, _, _ := strings.Cut(err.Error(), "\n")
			prefix := "f.yaml:" + tc.pos + ": "
			if !strings.HasPrefix(first, prefix) || !strings.Contains(first, tc.msg) {
				t.Errorf("first error = %q\nwant prefix %q and fragment %q\nall errors:\n%v", first, prefix, tc.msg, err)
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Source != "f.yaml" {
				t.Errorf("errors.As(*Error) = %v, %+v", errors.As(err, &pe), pe)
			}
		})
	}
}

func TestParseReportsEveryProblemInFileOrder(t *testing.T) {
	src := "version: 1\nallow:\n  - hosts: [\"*\"]\n    ports: [0]\n    bogus: 1\n  - hosts: [a.com]\n    ports: [70000]\n"
	_, err := Parse([]byte(src), "f.yaml")
	want := []string{
		`f.yaml:3:13: allow[0].hosts: bad glob "*": "*" may appear only as a leading "*." or "**."`,
		"f.yaml:4:13: allow[0].ports: port 0 out of range (1-65535)",
		`f.yaml:5:5: allow[0]: unknown field "bogus" (want one of: name, hosts, ports, http)`,
		"f.yaml:7:13: allow[1].ports: port 70000 out of range (1-65535)",
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("got:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestParseAliasBomb(t *testing.T) {
	// Each level lists the previous one ten times: 10^7 nodes if expanded.
	var b strings.Builder
	b.WriteString("version: 1\nallow:\n  - hosts: &a0 [a.com, a.com, a.com, a.com, a.com, a.com, a.com, a.com, a.com, a.com]\n")
	b.WriteString("deny: &top\n")
	_, err := Parse([]byte(b.String()+"  - hosts: *a0\n    http: &h [{paths: &p0 [/a, /a, /a, /a, /a, /a, /a, /a, /a, /a]}, {paths: *p0}, {paths: *p0}, {paths: *p0}, {paths: *p0}, {paths: *p0}, {paths: *p0}, {paths: *p0}, {paths: *p0}, {paths: *p0}]\n"+strings.Repeat("  - {hosts: *a0, http: *h}\n", 2000)), "f.yaml")
	if err == nil || !strings.Contains(err.Error(), "policy too large") {
		t.Errorf("err = %v, want policy too large", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/p.yaml"
	writeFile(t, path, designExample)
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.SHA256(); got != hashHex([]byte(designExample)) {
		t.Errorf("SHA256 = %s", got)
	}

	writeFile(t, path, "version: 1\nallow:\n  - hosts: [\"a*\"]\n")
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":3:13: ") {
		t.Errorf("Load error = %v, want %s:3:13: prefix", err, path)
	}
	if _, err := Load(dir + "/missing.yaml"); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load of a missing file = %v", err)
	}
}
