package policies

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	public   = netip.MustParseAddr("93.184.216.34")
)

var suggestCases = []struct {
	name string
	seen []Seen
	want string    // the YAML, exactly
	deny []Request // things the log does not show, which must stay denied
	warn int       // warnings expected
}{
	{
		name: "empty log",
		want: "version: 1\nallow: []\n",
		deny: []Request{{Host: "a.example", Port: 443}},
	},
	{
		name: "connection level, hosts grouped by ports",
		seen: []Seen{
			{Host: "b.example", Port: 443, Dst: public},
			{Host: "A.Example.", Port: 443, Dst: public},
			{Host: "a.example", Port: 443, Dst: public},
			{Host: "c.example", Port: 8443},
			{Host: "c.example", Port: 443},
		},
		want: `version: 1
allow:
  - name: "a.example+1"
    hosts: ["a.example", "b.example"]
    ports: [443]
  - name: "c.example"
    hosts: ["c.example"]
    ports: [443, 8443]
`,
		deny: []Request{{Host: "a.example", Port: 80}, {Host: "d.example", Port: 443}, {Host: "x.a.example", Port: 443}},
	},
	{
		name: "L7: paths share an entry only with the same methods",
		seen: []Seen{
			{Host: "api.example", Port: 443, Method: "GET", Path: "/a"},
			{Host: "api.example", Port: 443, Method: "get", Path: "/b"},
			{Host: "api.example", Port: 443, Method: "POST", Path: "/b"},
			{Host: "api.example", Port: 443, Method: "GET", Path: "/c"},
			{Host: "api.example", Port: 443, Method: "POST", Path: "/c"},
			{Host: "api.example", Port: 443, Method: "GET", Path: "/ws", Upgrade: "WebSocket"},
		},
		want: `version: 1
allow:
  - name: "api.example"
    hosts: ["api.example"]
    ports: [443]
    http:
      - methods: ["GET"]
        paths: ["/a"]
      - methods: ["GET", "POST"]
        paths: ["/b", "/c"]
      - methods: ["GET"]
        paths: ["/ws"]
        upgrade: ["websocket"]
`,
		deny: []Request{
			{Host: "api.example", Port: 443, Method: "POST", Path: "/a"},
			{Host: "api.example", Port: 443, Method: "GET", Path: "/d"},
			{Host: "api.example", Port: 443, Method: "GET", Path: "/a", Upgrade: "websocket"},
			{Host: "api.example", Port: 80, Method: "GET", Path: "/a"},
		},
	},
	{
		name: "connection level wins over L7 on the same host:port",
		seen: []Seen{
			{Host: "h.example", Port: 80, Method: "GET", Path: "/x"},
			{Host: "h.example", Port: 80},
			{Host: "h.example", Port: 8080, Method: "GET", Path: "/x"},
		},
		want: `version: 1
allow:
  - name: "h.example"
    hosts: ["h.example"]
    ports: [80]
  - name: "h.example-2"
    hosts: ["h.example"]
    ports: [8080]
    http:
      - methods: ["GET"]
        paths: ["/x"]
`,
		deny: []Request{{Host: "h.example", Port: 8080, Method: "GET", Path: "/y"}},
	},
	{
		name: "private addresses of names go to allow_private; IP hosts need none",
		seen: []Seen{
			{Host: "a.test", Port: 8080, Method: "GET", Path: "/", Dst: loopback},
			{Host: "b.test", Port: 8081, Dst: netip.MustParseAddr("::ffff:10.1.2.3")},
			{Host: "127.0.0.2", Port: 9000, Dst: netip.MustParseAddr("127.0.0.2")},
			{Host: "c.test", Port: 443, Dst: public},
		},
		want: `version: 1
allow:
  - name: "127.0.0.2"
    hosts: ["127.0.0.2"]
    ports: [9000]
  - name: "a.test"
    hosts: ["a.test"]
    ports: [8080]
    http:
      - methods: ["GET"]
        paths: ["/"]
  - name: "b.test"
    hosts: ["b.test"]
    ports: [8081]
  - name: "c.test"
    hosts: ["c.test"]
    ports: [443]
allow_private: ["10.1.2.3/32", "127.0.0.1/32"]
`,
	},
	{
		name: "what a pattern cannot say is widened, with a warning",
		seen: []Seen{
			{Host: "w.example", Port: 80, Method: "M-SEARCH", Path: "/a*b/c"},
			{Host: "w.example", Port: 80, Method: "OPTIONS", Path: "*"},
			{Host: "bad host", Port: 80},
			{Host: "w.example", Port: 0},
		},
		want: `version: 1
allow:
  - name: "w.example"
    hosts: ["w.example"]
    ports: [80]
    http:
      - methods: ["OPTIONS"]
        paths: ["/**"]
      - methods: ["*"]
        paths: ["/*/c"]
`,
		warn: 5,
	},
}

// TestSuggest: the YAML is as expected and parses; the policy allows every
// Seen (Decide and the SSRF guard both) and denies the near misses.
func TestSuggest(t *testing.T) {
	for _, c := range suggestCases {
		t.Run(c.name, func(t *testing.T) {
			p, warnings := Suggest(c.seen)
			if len(warnings) != c.warn {
				t.Errorf("warnings %q, want %d", warnings, c.warn)
			}
			y := string(p.YAML())
			if y != c.want {
				t.Errorf("YAML:\n%s\nwant:\n%s", y, c.want)
			}
			parsed, err := Parse([]byte(y), "suggested.yaml")
			if err != nil {
				t.Fatalf("suggested policy does not parse: %v\n%s", err, y)
			}
			if again := string(parsed.YAML()); again != y {
				t.Errorf("parse and render again:\n%s\nwant:\n%s", again, y)
			}
			for _, s := range c.seen {
				if _, ok := CanonicalHost(s.Host); !ok || s.Port == 0 {
					continue
				}
				r := Request{Host: s.Host, Port: s.Port, Method: s.Method, Path: s.Path, Upgrade: strings.ToLower(s.Upgrade)}
				d := parsed.Decide(r)
				if d.Action != Allow {
					t.Errorf("%+v: %s (%s), want allow", r, d.Action, d.Reason)
				}
				if conn := parsed.Decide(Request{Host: s.Host, Port: s.Port}); conn.Action != Allow {
					t.Errorf("connection to %s:%d denied (%s)", s.Host, s.Port, conn.Reason)
				}
				if s.Dst.IsValid() && !parsed.AddrAllowed(d, s.Dst) {
					t.Errorf("%+v: the SSRF guard refuses %s", r, s.Dst)
				}
			}
			for _, r := range c.deny {
				if d := parsed.Decide(r); d.Action != Deny {
					t.Errorf("%+v: allowed by %q, want deny", r, d.Rule)
				}
			}
		})
	}
}

// TestPolicyYAMLRoundTrip: any parsed policy renders to YAML that parses
// back to the same rules.
func TestPolicyYAMLRoundTrip(t *testing.T) {
	src := `version: 1
allow:
  - name: npm
    hosts: [registry.npmjs.org, "*.npmjs.com", "**.example.org", 10.0.0.0/8, "::1"]
    ports: [443]
  - hosts: [api.github.com]
    http:
      - methods: [GET, head]
        paths: ["/repos/**", /user]
      - paths: ["/socket/*"]
        upgrade: [websocket]
      - {}
deny:
  - name: "no \"gist\" writes"
    hosts: [api.github.com]
    http:
      - methods: [POST]
allow_private: [127.0.0.1/32, "fd00::/8"]
`
	p, err := Parse([]byte(src), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := p.YAML()
	q, err := Parse(y, "rendered.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if a, b := ruleHash(p), ruleHash(q); a != b {
		t.Errorf("rules changed in the round trip:\n%s", y)
	}
}

// ruleHash hashes the rules alone, ignoring the source bytes.
func ruleHash(p *Policy) string {
	q := *p
	q.sha = ""
	return q.SHA256()
}
