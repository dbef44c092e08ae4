package policies

import (
	"net/netip"
	"strings"
	"testing"
)

// fuzzRequests are decided against every policy FuzzParse manages to parse.
var fuzzRequests = []Request{
	{Host: "api.github.com", Port: 443},
	{Host: "api.github.com", Port: 443, Method: "GET", Path: "/repos/a/b"},
	{Host: "a.example.com", Port: 80, Method: "POST", Path: "/x/y", Upgrade: "websocket"},
	{Host: "10.0.0.1", Port: 8080},
	{Host: "[::1]", Port: 443, Method: "GET", Path: "*"},
}

func FuzzParse(f *testing.F) {
	for _, tc := range validPolicies {
		f.Add(tc.yaml)
	}
	for _, tc := range invalidPolicies {
		f.Add(tc.yaml)
	}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Parse([]byte(src), "f.yaml")
		if err != nil {
			if p != nil {
				t.Fatal("policy returned with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "f.yaml:") {
					t.Fatalf("error line %q lacks the f.yaml:LINE:COL: prefix", line)
				}
			}
			return
		}
		if len(p.SHA256()) != 64 {
			t.Fatalf("SHA256 = %q", p.SHA256())
		}
		for _, rules := range [][]Rule{p.Allow, p.Deny} {
			for _, r := range rules {
				if r.Name == "" || len(r.Hosts) == 0 || len(r.Ports) == 0 {
					t.Fatalf("rule not normalised: %+v", r)
				}
				if r.HTTP != nil && len(r.HTTP) == 0 {
					t.Fatalf("rule %q has empty non-nil HTTP", r.Name)
				}
				for _, h := range r.Hosts {
					// A pattern's canonical text parses back to itself.
					h2, err := ParseHostPattern(h.String())
					if err != nil || h2 != h {
						t.Fatalf("host %q does not round-trip: %v, %v", h, h2, err)
					}
				}
			}
		}
		for _, r := range fuzzRequests {
			d := p.Decide(r)
			p.AddrAllowed(d, netip.MustParseAddr("127.0.0.1"))
		}
	})
}

func FuzzCanonicalHost(f *testing.F) {
	for _, tc := range canonicalHostCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, host string) {
		canon, ok := CanonicalHost(host)
		if !ok {
			if canon != "" {
				t.Fatalf("CanonicalHost(%q) = %q, false", host, canon)
			}
			return
		}
		if canon == "" {
			t.Fatalf("CanonicalHost(%q) = \"\", true", host)
		}
		again, ok := CanonicalHost(canon)
		if !ok || again != canon {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", host, canon, again, ok)
		}
		if a, err := netip.ParseAddr(canon); err == nil {
			if a.String() != canon || a.Is4In6() || a.Zone() != "" {
				t.Fatalf("CanonicalHost(%q) = %q, not a canonical address", host, canon)
			}
		} else if canon != strings.ToLower(canon) || strings.HasSuffix(canon, ".") {
			t.Fatalf("CanonicalHost(%q) = %q, not a canonical name", host, canon)
		}
		// A name pattern made from a canonical name matches it.
		if _, err := netip.ParseAddr(canon); err != nil {
			if h, err := ParseHostPattern(canon); err != nil || !h.Match(host) {
				t.Fatalf("pattern %q does not match %q: %v", canon, host, err)
			}
		}
	})
}
