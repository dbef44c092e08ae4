package policies

import "testing"

func TestNameAllowed(t *testing.T) {
	p, err := Parse([]byte(`version: 1
allow:
  - name: exact
    hosts: [api.example.com]
  - name: subs
    hosts: ["*.cdn.example"]
    ports: [8443]
  - name: ip
    hosts: [10.0.0.0/8]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, host, rule string
		ok               bool
	}{
		{"exact", "api.example.com", "exact", true},
		{"exact upper and dot", "API.Example.COM.", "exact", true},
		{"subdomain on any port", "a.b.cdn.example", "subs", true},
		{"apex of subdomain-only glob", "cdn.example", "", false},
		{"other name", "evil.example", "", false},
		{"ip literal never a name", "10.1.2.3", "ip", true},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule, ok := p.NameAllowed(tc.host)
			if ok != tc.ok || rule != tc.rule {
				t.Fatalf("NameAllowed(%q) = %q, %v; want %q, %v", tc.host, rule, ok, tc.rule, tc.ok)
			}
		})
	}
	if _, ok := (*Policy)(nil).NameAllowed("a.example"); ok {
		t.Fatal("nil policy allowed a name")
	}
}
