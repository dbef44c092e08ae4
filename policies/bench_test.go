package policies

import (
	"fmt"
	"testing"
)

func BenchmarkDecide(b *testing.B) {
	design := mustParse(b, designExample)
	// A larger policy: 200 allow rules ahead of the one that matches.
	var src = "version: 1\nallow:\n"
	for i := range 200 {
		src += fmt.Sprintf("  - hosts: [\"*.host%d.example\", 10.%d.0.0/16]\n    ports: [443]\n", i, i)
	}
	src += "  - name: last\n    hosts: [api.github.com]\n    http: [{methods: [GET], paths: [\"/repos/**\"]}]\n"
	large := mustParse(b, src)

	cases := []struct {
		name string
		p    *Policy
		req  Request
	}{
		{"conn/design", design, Request{Host: "registry.npmjs.org", Port: 443}},
		{"request/design", design, Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/repos/o/r/pulls/1"}},
		{"request/design/mixed-case-host", design, Request{Host: "API.GitHub.com", Port: 443, Method: "GET", Path: "/repos/o/r"}},
		{"conn/ip-literal", design, Request{Host: "2130706433", Port: 443}},
		{"conn/large/miss", large, Request{Host: "evil.example", Port: 443}},
		{"request/large/last-rule", large, Request{Host: "api.github.com", Port: 443, Method: "GET", Path: "/repos/o/r"}},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.p.Decide(bc.req)
			}
		})
	}
}
