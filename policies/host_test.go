package policies

import (
	"os"
	"strings"
	"testing"
)

func hosts(t testing.TB, patterns ...string) []HostPattern {
	t.Helper()
	var out []HostPattern
	for _, s := range patterns {
		h, err := ParseHostPattern(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

func hostStrings(hs []HostPattern) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.String())
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseHostPattern(t *testing.T) {
	cases := []struct {
		name, in, want, err string
	}{
		{"exact", "example.com", "example.com", ""},
		{"exact upper trailing dot", "Example.COM.", "example.com", ""},
		{"single label", "localhost", "localhost", ""},
		{"underscore", "_dmarc.example.com", "_dmarc.example.com", ""},
		{"subdomains", "*.example.com", "*.example.com", ""},
		{"apex", "**.Example.com", "**.example.com", ""},
		{"ipv4", "10.0.0.1", "10.0.0.1", ""},
		{"ipv6", "2001:db8::1", "2001:db8::1", ""},
		{"ipv6 bracketed", "[::1]", "::1", ""},
		{"ipv4-mapped", "::ffff:127.0.0.1", "127.0.0.1", ""},
		{"cidr4", "10.0.0.0/8", "10.0.0.0/8", ""},
		{"cidr6", "fd00::/8", "fd00::/8", ""},
		{"cidr mapped", "::ffff:192.168.0.0/112", "192.168.0.0/16", ""},
		{"cidr all", "0.0.0.0/0", "0.0.0.0/0", ""},
		{"empty", "", "", "empty host pattern"},
		{"star", "*", "", "bad glob"},
		{"double star", "**", "", "bad glob"},
		{"star no dot", "*example.com", "", "bad glob"},
		{"inner star", "a.*.com", "", "bad glob"},
		{"trailing star", "example.*", "", "bad glob"},
		{"two globs", "*.*.com", "", "bad glob"},
		{"glob empty rest", "*.", "", "bad glob"},
		{"space", "a b", "", "invalid character ' '"},
		{"port", "a.com:443", "", `invalid host "a.com:443"`},
		{"url", "http://a.com", "", "is a URL"},
		{"unicode", "bücher.de", "", "invalid character"},
		{"label too long", strings.Repeat("a", 64) + ".com", "", "invalid host"},
		{"numeric last label", "a.123", "", "invalid host"},
		{"decimal ip", "2130706433", "", "non-standard form; write 127.0.0.1"},
		{"short ip", "127.1", "", "non-standard form"},
		{"zone", "fe80::1%eth0", "", "invalid character '%'"},
		{"bracketed v4", "[10.0.0.1]", "", "invalid host"},
		{"cidr host bits", "10.0.0.1/8", "", "did you mean 10.0.0.0/8?"},
		{"cidr bad", "10.0.0.0/33", "", "invalid CIDR"},
		{"cidr name", "a.com/8", "", "invalid CIDR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHostPattern(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseHostPattern(%q) = %v, %v; want error containing %q", tc.in, h, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.String() != tc.want {
				t.Errorf("String() = %q, want %q", h.String(), tc.want)
			}
		})
	}
}

func TestHostPatternMatch(t *testing.T) {
	cases := []struct {
		name, pattern, host string
		want                bool
	}{
		{"exact", "example.com", "example.com", true},
		{"exact case", "example.com", "EXAMPLE.Com", true},
		{"exact trailing dot", "example.com", "example.com.", true},
		{"exact not sub", "example.com", "a.example.com", false},
		{"exact not suffix", "example.com", "badexample.com", false},
		{"sub one level", "*.example.com", "a.example.com", true},
		{"sub deep", "*.example.com", "a.b.c.example.com", true},
		{"sub not apex", "*.example.com", "example.com", false},
		{"sub not lookalike", "*.example.com", "aexample.com", false},
		{"sub not other", "*.example.com", "example.org", false},
		{"sub not empty label", "*.example.com", ".example.com", false},
		{"apex apex", "**.example.com", "example.com", true},
		{"apex sub", "**.example.com", "x.y.example.com", true},
		{"apex not lookalike", "**.example.com", "notexample.com", false},
		{"ip", "127.0.0.1", "127.0.0.1", true},
		{"ip other", "127.0.0.1", "127.0.0.2", false},
		{"ip decimal form", "127.0.0.1", "2130706433", true},
		{"ip mapped form", "127.0.0.1", "[::ffff:127.0.0.1]", true},
		{"ip never a name", "127.0.0.1", "localhost", false},
		{"name never an ip", "localhost", "127.0.0.1", false},
		{"glob never an ip", "*.com", "127.0.0.1", false},
		{"ipv6", "::1", "[::1]", true},
		{"ipv6 long form", "::1", "0:0:0:0:0:0:0:1", true},
		{"cidr in", "10.0.0.0/8", "10.200.3.4", true},
		{"cidr out", "10.0.0.0/8", "11.0.0.1", false},
		{"cidr octal form", "10.0.0.0/8", "012.1", true},
		{"cidr6 in", "fd00::/8", "fd12::1", true},
		{"cidr6 no v4", "::/0", "10.0.0.1", false},
		{"cidr mapped host", "192.168.0.0/16", "::ffff:192.168.1.1", true},
		{"invalid host", "example.com", "exa mple.com", false},
		{"empty host", "example.com", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := hosts(t, tc.pattern)[0]
			if got := h.Match(tc.host); got != tc.want {
				t.Errorf("%s.Match(%q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
			}
		})
	}
	if (HostPattern{}).Match("example.com") || (HostPattern{}).String() != "" {
		t.Error("zero HostPattern must match nothing and print as \"\"")
	}
}

// canonicalHostCases: FuzzCanonicalHost is seeded from them.
var canonicalHostCases = []struct {
	name, in, want string
	ok             bool
}{
	{"name", "example.com", "example.com", true},
	{"upper", "ExAmple.COM", "example.com", true},
	{"trailing dot", "example.com.", "example.com", true},
	{"single label", "localhost", "localhost", true},
	{"hyphen underscore", "a-b_c.example", "a-b_c.example", true},
	{"dotted quad", "127.0.0.1", "127.0.0.1", true},
	{"dotted quad trailing dot", "127.0.0.1.", "127.0.0.1", true},
	{"decimal", "2130706433", "127.0.0.1", true},
	{"octal", "0177.0.0.1", "127.0.0.1", true},
	{"octal zeros", "00.00.00.00", "0.0.0.0", true},
	{"hex", "0x7f.1", "127.0.0.1", true},
	{"hex upper", "0X7F.0X0.0X0.0X1", "127.0.0.1", true},
	{"hex whole", "0x7f000001", "127.0.0.1", true},
	{"short two", "127.1", "127.0.0.1", true},
	{"short three", "10.1.258", "10.1.1.2", true},
	{"single zero", "0", "0.0.0.0", true},
	{"mixed", "0xa9.0376.43518", "169.254.169.254", true},
	{"max", "4294967295", "255.255.255.255", true},
	{"v6 bracketed", "[::1]", "::1", true},
	{"v6 bare", "::1", "::1", true},
	{"v6 long", "[2001:DB8:0:0:0:0:0:1]", "2001:db8::1", true},
	{"v4 mapped", "[::ffff:127.0.0.1]", "127.0.0.1", true},
	{"v4 mapped hex", "[::ffff:7f00:1]", "127.0.0.1", true},
	{"nat64 kept", "[64:ff9b::7f00:1]", "64:ff9b::7f00:1", true},
	{"empty", "", "", false},
	{"dot only", ".", "", false},
	{"two trailing dots", "example.com..", "", false},
	{"leading dot", ".example.com", "", false},
	{"empty label", "a..b", "", false},
	{"space", "exa mple.com", "", false},
	{"port", "example.com:443", "", false},
	{"slash", "a/b", "", false},
	{"percent", "a%2eb", "", false},
	{"at", "user@host", "", false},
	{"unicode", "bücher.de", "", false},
	{"nul", "a\x00b", "", false},
	{"star", "*.example.com", "", false},
	{"label 64", strings.Repeat("a", 64), "", false},
	{"name 253 with dot", strings.Repeat("a.", 127), strings.Repeat("a.", 126) + "a", true},
	{"name 254", strings.Repeat("a.", 127) + "a", "", false},
	{"too big decimal", "4294967296", "", false},
	{"too big part", "256.0.0.1", "", false},
	{"too big last of 4", "1.2.3.256", "", false},
	{"too big last of 2", "1.16777216", "", false},
	{"five parts", "1.2.3.4.5", "", false},
	{"octal 8", "08.0.0.1", "", false},
	{"octal 9 whole", "09", "", false},
	{"hex empty", "0x", "", false},
	{"hex empty part", "0x.1", "", false},
	{"hex bad digit", "0xg.1", "", false},
	{"numeric tld", "example.123", "", false},
	{"hex tld", "example.0x1f", "", false},
	{"empty part", "1..1", "", false},
	{"leading plus", "+1.2.3.4", "", false},
	{"v6 zone", "[fe80::1%eth0]", "", false},
	{"v6 zone bare", "fe80::1%25eth0", "", false},
	{"v6 unclosed", "[::1", "", false},
	{"bracketed v4", "[127.0.0.1]", "", false},
	{"bracketed name", "[example.com]", "", false},
	{"v6 bad", "[::g]", "", false},
	{"v6 with port", "[::1]:80", "", false},
}

func TestCanonicalHost(t *testing.T) {
	for _, tc := range canonicalHostCases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := CanonicalHost(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("CanonicalHost(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}
