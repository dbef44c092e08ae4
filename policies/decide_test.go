package policies

import (
	"net/netip"
	"reflect"
	"testing"
)

const layeredPolicy = `version: 1
allow:
  - name: gh-http
    hosts: [api.github.com]
    http:
      - methods: ["*"]
        paths: ["/**"]
  - name: gh-conn
    hosts: [api.github.com, 10.0.0.0/8, 192.168.1.1]
  - name: internal
    hosts: ["*.corp.example", 10.1.2.3]
    ports: [8080]
  - name: ws-only-get
    hosts: [ws.example]
    http:
      - methods: [GET]
        paths: [/ws]
  - name: ws-upgrade
    hosts: [ws.example]
    http:
      - methods: [GET]
        paths: [/ws]
        upgrade: [websocket]
  - name: any-upgrade
    hosts: [up.example]
    http: [{upgrade: ["*"]}]
deny:
  - name: no-gist-writes
    hosts: [api.github.com]
    http:
      - methods: [POST, DELETE]
        paths: ["/gists/**"]
  - name: blocked-host
    hosts: [bad.corp.example]
    ports: [8080]
  - name: only-inspect
    hosts: [watched.example]
    http: [{methods: [DELETE]}]
  - name: no-sockets
    hosts: [ws.example]
    http: [{methods: [GET], paths: [/ws/admin]}]
`

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestDecide(t *testing.T) {
	policies := map[string]*Policy{
		"design":  mustParse(t, designExample),
		"layered": mustParse(t, layeredPolicy),
		"default": Default(),
		"nil":     nil,
		"in code": {Allow: []Rule{{Name: "bare", Hosts: hosts(t, "a.example"), HTTP: []HTTPRule{{Upgrade: []string{"websocket"}}}}}},
	}
	allow := func(rule string) Decision { return Decision{Action: Allow, Rule: rule, Reason: ReasonRuleAllow} }
	deny := func(rule string, reason Reason) Decision { return Decision{Action: Deny, Rule: rule, Reason: reason} }
	inspect := func(d Decision) Decision { d.Inspect = true; return d }
	addrs := func(d Decision, ss ...string) Decision { d.Addrs = prefixes(ss...); return d }
	noMatch := deny("", ReasonNoMatchingRule)

	cases := []struct {
		name, policy string
		req          Request
		want         Decision
	}{
		// Connection level.
		{"conn allow blind", "design", Request{Host: "registry.npmjs.org", Port: 443}, allow("npm")},
		{"conn canonicalised host", "design", Request{Host: "Registry.NPMJS.org.", Port: 443}, allow("npm")},
		{"conn wrong port", "design", Request{Host: "registry.npmjs.org", Port: 80}, noMatch},
		{"conn default ports", "design", Request{Host: "chat.example.com", Port: 80}, inspect(allow("chat"))},
		{"conn default ports exclude others", "design", Request{Host: "chat.example.com", Port: 8080}, noMatch},
		{"conn allow with http inspects", "design", Request{Host: "api.github.com", Port: 443}, inspect(allow("github-read"))},
		{"conn unknown host", "design", Request{Host: "evil.example", Port: 443}, noMatch},
		{"conn ip not a name", "design", Request{Host: "127.0.0.1", Port: 443}, noMatch},
		{"conn prefers rule without http", "layered", Request{Host: "api.github.com", Port: 443},
			inspect(addrs(allow("gh-conn"), "10.0.0.0/8", "192.168.1.1/32"))},
		{"conn cidr", "layered", Request{Host: "10.9.9.9", Port: 443}, addrs(allow("gh-conn"), "10.0.0.0/8", "192.168.1.1/32")},
		{"conn cidr octal form", "layered", Request{Host: "012.9.9.9", Port: 80}, addrs(allow("gh-conn"), "10.0.0.0/8", "192.168.1.1/32")},
		{"conn ip in second rule", "layered", Request{Host: "10.1.2.3", Port: 8080}, addrs(allow("internal"), "10.1.2.3/32")},
		{"conn subdomain glob", "layered", Request{Host: "x.y.corp.example", Port: 8080}, addrs(allow("internal"), "10.1.2.3/32")},
		{"conn deny without http wins", "layered", Request{Host: "bad.corp.example", Port: 8080}, deny("blocked-host", ReasonRuleDeny)},
		{"conn deny rule port", "layered", Request{Host: "bad.corp.example", Port: 9090}, noMatch},
		{"conn deny with http only inspects", "layered", Request{Host: "watched.example", Port: 443}, inspect(noMatch)},
		{"conn bad host", "design", Request{Host: "evil example", Port: 443}, deny("", ReasonBadRequest)},
		{"conn empty host", "design", Request{Host: "", Port: 443}, deny("", ReasonBadRequest)},
		{"conn port zero", "design", Request{Host: "registry.npmjs.org", Port: 0}, deny("", ReasonBadRequest)},
		{"conn port too big", "design", Request{Host: "registry.npmjs.org", Port: 65536}, deny("", ReasonBadRequest)},
		{"conn default policy", "default", Request{Host: "example.com", Port: 443}, noMatch},
		{"conn nil policy", "nil", Request{Host: "example.com", Port: 443}, noMatch},
		{"conn rule built in code", "in code", Request{Host: "a.example", Port: 80}, inspect(allow("bare"))},

		// Request level.
		{"req allowed path glob", "design", Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/repos/o/r/pulls"}, allow("github-read")},
		{"req ** matches zero segments", "design", Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/repos"}, allow("github-read")},
		{"req exact path", "design", Request{Host: "api.github.com", Port: 443, Method: "HEAD", Path: "/user"}, allow("github-read")},
		{"req exact path no deeper", "design", Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/user/keys"}, noMatch},
		{"req method case-insensitive", "design", Request{Host: "api.github.com", Port: 443, Method: "get", Path: "/user"}, allow("github-read")},
		{"req method not allowed", "design", Request{Host: "api.github.com", Port: 443, Method: "PUT", Path: "/repos/x"}, noMatch},
		{"req deny http matches", "design", Request{Host: "api.github.com", Port: 443, Method: "POST", Path: "/gists/1"}, deny("no-gist-writes", ReasonRuleDeny)},
		{"req rule without http allows anything", "design", Request{Host: "registry.npmjs.org", Port: 443, Method: "PURGE", Path: "/x", Upgrade: "websocket"}, allow("npm")},
		{"req upgrade listed", "design", Request{Host: "chat.example.com", Port: 80, Method: "GET", Path: "/socket/x", Upgrade: "websocket"}, allow("chat")},
		{"req upgrade not listed", "design", Request{Host: "chat.example.com", Port: 80, Method: "GET", Path: "/socket/x", Upgrade: "h2c"}, deny("chat", ReasonUpgradeNotAllowed)},
		{"req no upgrade asked", "design", Request{Host: "chat.example.com", Port: 443, Method: "GET", Path: "/socket"}, allow("chat")},
		{"req upgrade on unmatched path", "design", Request{Host: "chat.example.com", Port: 80, Method: "GET", Path: "/other", Upgrade: "websocket"}, noMatch},
		{"req empty path is root", "layered", Request{Host: "ws.example", Port: 80, Method: "GET", Path: ""}, noMatch},
		{"req deny beats earlier allow", "layered", Request{Host: "api.github.com", Port: 443, Method: "DELETE", Path: "/gists/a/b"}, deny("no-gist-writes", ReasonRuleDeny)},
		{"req first allow in order", "layered", Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/gists/a"}, allow("gh-http")},
		{"req deny without http", "layered", Request{Host: "bad.corp.example", Port: 8080, Method: "GET", Path: "/"}, deny("blocked-host", ReasonRuleDeny)},
		{"req addrs from deciding rule", "layered", Request{Host: "10.1.2.3", Port: 8080, Method: "GET", Path: "/"}, addrs(allow("internal"), "10.1.2.3/32")},
		{"req later rule permits upgrade", "layered", Request{Host: "ws.example", Port: 443, Method: "GET", Path: "/ws", Upgrade: "websocket"}, allow("ws-upgrade")},
		{"req upgrade refused names first rule", "layered", Request{Host: "ws.example", Port: 443, Method: "GET", Path: "/ws", Upgrade: "h2c"}, deny("ws-only-get", ReasonUpgradeNotAllowed)},
		{"req plain request", "layered", Request{Host: "ws.example", Port: 443, Method: "GET", Path: "/ws"}, allow("ws-only-get")},
		{"req deny ignores upgrade", "layered", Request{Host: "ws.example", Port: 443, Method: "GET", Path: "/ws/admin", Upgrade: "websocket"}, deny("no-sockets", ReasonRuleDeny)},
		{"req upgrade wildcard", "layered", Request{Host: "up.example", Port: 80, Method: "OPTIONS", Path: "*", Upgrade: "anything/2"}, allow("any-upgrade")},
		{"req deny http only, no allow", "layered", Request{Host: "watched.example", Port: 443, Method: "GET", Path: "/"}, noMatch},
		{"req deny http only, matched", "layered", Request{Host: "watched.example", Port: 443, Method: "DELETE", Path: "/x"}, deny("only-inspect", ReasonRuleDeny)},
		{"req bad host", "layered", Request{Host: "a b", Port: 443, Method: "GET", Path: "/"}, deny("", ReasonBadRequest)},
		{"req default policy", "default", Request{Host: "example.com", Port: 443, Method: "GET", Path: "/"}, noMatch},
		{"req rule built in code, empty methods and paths", "in code", Request{Host: "a.example", Port: 443, Method: "PATCH", Path: "/z", Upgrade: "websocket"}, allow("bare")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := policies[tc.policy]
			if !ok {
				t.Fatalf("no policy %q", tc.policy)
			}
			if got := p.Decide(tc.req); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Decide(%+v)\n got %+v\nwant %+v", tc.req, got, tc.want)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	if Allow.String() != "allow" || Deny.String() != "deny" {
		t.Errorf("Allow=%q Deny=%q", Allow, Deny)
	}
}

func TestMatchPath(t *testing.T) {
	cases := []struct {
		name, pattern, path string
		want                bool
	}{
		{"root", "/", "/", true},
		{"root not deeper", "/", "/a", false},
		{"literal", "/user", "/user", true},
		{"literal trailing slash", "/user", "/user/", false},
		{"literal case-sensitive", "/user", "/User", false},
		{"literal prefix only", "/user", "/users", false},
		{"star one segment", "/a/*", "/a/b", true},
		{"star not zero", "/a/*", "/a", false},
		{"star not empty segment", "/a/*", "/a/", false},
		{"star not two", "/a/*", "/a/b/c", false},
		{"star middle", "/a/*/c", "/a/b/c", true},
		{"dstar zero", "/repos/**", "/repos", true},
		{"dstar one", "/repos/**", "/repos/a", true},
		{"dstar many", "/repos/**", "/repos/a/b/c", true},
		{"dstar trailing slash", "/repos/**", "/repos/", true},
		{"dstar not sibling", "/repos/**", "/repository", false},
		{"dstar middle", "/a/**/z", "/a/b/c/z", true},
		{"dstar middle zero", "/a/**/z", "/a/z", true},
		{"dstar middle miss", "/a/**/z", "/a/b/c", false},
		{"dstar backtrack", "/**/a/b", "/a/a/a/b", true},
		{"two dstars", "/**/x/**/y", "/1/x/2/x/3/y", true},
		{"two dstars miss", "/**/x/**/y", "/1/x/2/y/3", false},
		{"dstar star", "/**/*", "/", false},
		{"any path", "/**", "/", true},
		{"any path odd", "/**", "*", true},
		{"empty path is root", "/", "", true},
		{"relative path", "/a", "a", false},
		{"literal stars in path", "/a/*", "/a/*", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := matchPath(tc.pattern, tc.path); got != tc.want {
				t.Errorf("matchPath(%q, %q) = %v, want %v", tc.pattern, tc.path, got, tc.want)
			}
		})
	}
}

func TestDecideDoesNotAllocateWithoutAddrs(t *testing.T) {
	p := mustParse(t, designExample)
	req := Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/repos/o/r"}
	if n := testing.AllocsPerRun(100, func() { p.Decide(req) }); n != 0 {
		t.Errorf("Decide allocates %v times per call", n)
	}
}
