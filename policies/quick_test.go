package policies

import (
	"reflect"
	"strings"
	"testing"
)

func TestQuickRule(t *testing.T) {
	cases := []struct {
		name, spec string
		host       string // canonical host pattern
		ports      []int
		err        string
	}{
		{"name", "example.com", "example.com", []int{80, 443}, ""},
		{"name port", "example.com:8443", "example.com", []int{8443}, ""},
		{"glob", "*.example.com", "*.example.com", []int{80, 443}, ""},
		{"apex glob port", "**.Example.com:443", "**.example.com", []int{443}, ""},
		{"ipv4", "10.0.0.1", "10.0.0.1", []int{80, 443}, ""},
		{"ipv4 port", "127.0.0.1:5432", "127.0.0.1", []int{5432}, ""},
		{"cidr port", "10.0.0.0/8:22", "10.0.0.0/8", []int{22}, ""},
		{"ipv6 bracketed", "[::1]", "::1", []int{80, 443}, ""},
		{"ipv6 bracketed port", "[2001:db8::1]:8080", "2001:db8::1", []int{8080}, ""},
		{"ipv6 bare", "2001:db8::1", "2001:db8::1", []int{80, 443}, ""},
		{"ipv6 cidr bare", "fd00::/8", "fd00::/8", []int{80, 443}, ""},
		{"ipv6 cidr bracketed port", "[fd00::/8]:443", "fd00::/8", []int{443}, ""},
		{"empty", "", "", nil, "empty value; want HOST[:PORT]"},
		{"url", "https://example.com", "", nil, "not a URL"},
		{"empty host", ":443", "", nil, "empty host"},
		{"empty port", "example.com:", "", nil, "empty port"},
		{"port zero", "example.com:0", "", nil, "port 0 out of range (1-65535)"},
		{"port too big", "example.com:65536", "", nil, "port 65536 out of range"},
		{"port huge", "example.com:99999999999999999999", "", nil, "out of range"},
		{"port not number", "example.com:https", "", nil, `port "https" is not a number`},
		{"port negative", "example.com:-1", "", nil, `port "-1" is not a number`},
		{"port plus", "example.com:+443", "", nil, `port "+443" is not a number`},
		{"bad glob", "*:443", "", nil, "bad glob"},
		{"bad glob middle", "a.*.com", "", nil, "bad glob"},
		{"bad char", "exa mple.com", "", nil, "invalid character"},
		{"unclosed bracket", "[::1:443", "", nil, `missing "]"`},
		{"bracketed v4", "[10.0.0.1]:80", "", nil, "brackets are only for IPv6"},
		{"junk after bracket", "[::1]443", "", nil, "want [IPV6]:PORT"},
		{"non-standard ip", "2130706433", "", nil, "write 127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := QuickRule(tc.spec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "--allow ") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("QuickRule(%q) = %+v, %v; want one-line error containing %q", tc.spec, r, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Rule{Name: "--allow " + tc.spec, Hosts: hosts(t, tc.host), Ports: tc.ports}
			if !reflect.DeepEqual(r, want) {
				t.Errorf("QuickRule(%q) = %+v, want %+v", tc.spec, r, want)
			}
		})
	}
}

func TestWithAllow(t *testing.T) {
	base := mustParse(t, designExample)
	baseCopy := mustParse(t, designExample)
	r, err := QuickRule("example.org:8443")
	if err != nil {
		t.Fatal(err)
	}
	p := base.WithAllow(r)
	if !reflect.DeepEqual(base, baseCopy) {
		t.Error("WithAllow modified its receiver")
	}
	if got := p.Decide(Request{Host: "example.org", Port: 8443}); got.Action != Allow || got.Rule != "--allow example.org:8443" {
		t.Errorf("added rule: %+v", got)
	}
	if got := p.Decide(Request{Host: "api.github.com", Port: 443, Method: "POST", Path: "/gists/x"}); got.Reason != ReasonRuleDeny {
		t.Errorf("base deny rule lost: %+v", got)
	}
	if got := base.Decide(Request{Host: "example.org", Port: 8443}); got.Action != Deny {
		t.Errorf("base policy allows the added host: %+v", got)
	}
	if !reflect.DeepEqual(p.AllowPrivate, base.AllowPrivate) {
		t.Errorf("AllowPrivate = %v", p.AllowPrivate)
	}

	// Appending to the copy must not write into the base's backing array.
	q := base.WithAllow()
	q.Allow = append(q.Allow, r)
	if len(base.Allow) != 3 {
		t.Errorf("base.Allow grew to %d", len(base.Allow))
	}

	var nilPolicy *Policy
	if got := nilPolicy.WithAllow(r).Decide(Request{Host: "example.org", Port: 8443}); got.Action != Allow {
		t.Errorf("nil.WithAllow: %+v", got)
	}
}

func TestSHA256(t *testing.T) {
	r1, _ := QuickRule("a.example")
	r2, _ := QuickRule("b.example")
	design := mustParse(t, designExample)
	cases := []struct {
		name string
		p    *Policy
		want string // "" to only check shape and distinctness
	}{
		{"parsed", design, hashHex([]byte(designExample))},
		{"default is the embedded bytes", Default(), hashHex(defaultYAML)},
		{"quick rule", Default().WithAllow(r1), ""},
		{"two quick rules", Default().WithAllow(r1, r2), ""},
		{"policy plus quick rule", design.WithAllow(r1), ""},
		{"built in code", &Policy{Allow: []Rule{r1}}, ""},
		{"built in code, every part", &Policy{
			Allow:        []Rule{{Name: "h", Hosts: r1.Hosts, HTTP: []HTTPRule{{Methods: []string{"GET"}, Upgrade: []string{"websocket"}}}}},
			Deny:         []Rule{r2},
			AllowPrivate: prefixes("10.0.0.0/8"),
		}, ""},
		{"nil", nil, ""},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p.SHA256()
			if len(got) != 64 || strings.Trim(got, "0123456789abcdef") != "" {
				t.Fatalf("SHA256() = %q, not 64 hex digits", got)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("SHA256() = %s, want %s", got, tc.want)
			}
			if prev, dup := seen[got]; dup {
				t.Errorf("same hash as %q", prev)
			}
			seen[got] = tc.name
		})
	}
	if a, b := Default().WithAllow(r1).SHA256(), Default().WithAllow(r1).SHA256(); a != b {
		t.Error("WithAllow hash is not deterministic")
	}
}

func TestDefault(t *testing.T) {
	p := Default()
	if len(p.Allow) != 0 || len(p.Deny) != 0 || len(p.AllowPrivate) != 0 {
		t.Errorf("Default() = %+v, want no rules", p)
	}
	if !strings.Contains(string(defaultYAML), "version: 1") {
		t.Errorf("default.yaml = %q", defaultYAML)
	}
	// Each call is independent: mutating one must not affect the next.
	p.Allow = append(p.Allow, Rule{Name: "x"})
	if len(Default().Allow) != 0 {
		t.Error("Default shares state between calls")
	}
}
