package policies

// Fuzz targets for the two matchers every decision runs: host patterns
// (HostPattern.Match) and path patterns (matchPath). Each is checked
// against properties that hold for any input, and matchPath against a
// plain dynamic-programming matcher that is slow but obviously right.

import (
	"net/netip"
	"strings"
	"testing"
)

func FuzzHostPatternMatch(f *testing.F) {
	seeds := [][2]string{
		{"example.com", "EXAMPLE.com."},
		{"*.example.com", "a.b.example.com"},
		{"**.example.com", "example.com"},
		{"*.example.com", "aexample.com"},
		{"127.0.0.1", "2130706433"},
		{"127.0.0.1", "0x7f.1"},
		{"127.0.0.1", "[::ffff:127.0.0.1]"},
		{"10.0.0.0/8", "012.1"},
		{"::ffff:192.168.0.0/112", "192.168.4.4"},
		{"fd00::/8", "[fd00::1]"},
		{"localhost", "127.0.0.1"},
		{"_srv.example.com", "_SRV.example.com"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		h, err := ParseHostPattern(pattern)
		if err != nil {
			return
		}
		got := h.Match(host)
		canon, ok := CanonicalHost(host)
		if !ok {
			if got {
				t.Fatalf("%q matches %q, which is not a valid host", h, host)
			}
			return
		}
		// Matching sees only the canonical host: every spelling of the same
		// host (case, trailing dot, IP literal form) gets the same answer.
		if again := h.Match(canon); again != got {
			t.Fatalf("%q: Match(%q) = %v but Match(canonical %q) = %v", h, host, got, canon, again)
		}
		if up := strings.ToUpper(host); h.Match(up) != got {
			t.Fatalf("%q: Match(%q) = %v but Match(%q) differs", h, host, got, up)
		}
		addr, err := netip.ParseAddr(canon)
		isAddr := err == nil
		switch h.kind {
		case hostAddr, hostPrefix:
			// An IP pattern never matches a name; for an address it is
			// exactly prefix containment.
			if want := isAddr && h.prefix.Contains(addr); got != want {
				t.Fatalf("%q: Match(%q) = %v, want %v (canonical %q)", h, host, got, want, canon)
			}
		case hostExact:
			if want := !isAddr && canon == h.name; got != want {
				t.Fatalf("%q: Match(%q) = %v, want %v", h, host, got, want)
			}
		case hostSubdomains, hostApex:
			want := !isAddr && strings.HasSuffix(canon, "."+h.name)
			if h.kind == hostApex {
				want = want || !isAddr && canon == h.name
			}
			if got != want {
				t.Fatalf("%q: Match(%q) = %v, want %v", h, host, got, want)
			}
		default:
			t.Fatalf("parsed pattern %q has no kind", pattern)
		}
	})
}

func FuzzMatchPath(f *testing.F) {
	seeds := [][2]string{
		{"/", "/"}, {"/repos/**", "/repos/"}, {"/a/*/c", "/a/b/c"},
		{"/**/a/b", "/a/a/a/b"}, {"/**/x/**/y", "/1/x/2/y/3"}, {"/**/*", "/"},
		{"/a/**/z", "/a/z"}, {"/**", "*"}, {"/a/*", "/a/"}, {"/user", "/user/"},
		{"/a/**/**/b", "/a/b"}, {"/*/*/**", "//x"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if checkPathPattern(pattern) != nil || len(pattern) > 256 || len(path) > 256 {
			return
		}
		got := matchPath(pattern, path)
		if want := refMatchPath(pattern, path); got != want {
			t.Fatalf("matchPath(%q, %q) = %v, reference says %v", pattern, path, got, want)
		}
	})
}

// refMatchPath is matchPath's documented semantics written as a table over
// segment positions: "*" one non-empty segment, "**" any number of
// segments, anything else itself; "/**" matches every path; "" is "/".
func refMatchPath(pattern, path string) bool {
	if pattern == anyPath {
		return true
	}
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(pattern, "/") || !strings.HasPrefix(path, "/") {
		return false
	}
	ps := strings.Split(pattern[1:], "/")
	ss := strings.Split(path[1:], "/")
	// m[i][j]: ps[i:] matches ss[j:].
	m := make([][]bool, len(ps)+1)
	for i := range m {
		m[i] = make([]bool, len(ss)+1)
	}
	m[len(ps)][len(ss)] = true
	for i := len(ps) - 1; i >= 0; i-- {
		for j := len(ss); j >= 0; j-- {
			switch {
			case ps[i] == "**":
				m[i][j] = m[i+1][j] || j < len(ss) && m[i][j+1]
			case j == len(ss):
				m[i][j] = false
			case ps[i] == "*":
				m[i][j] = ss[j] != "" && m[i+1][j+1]
			default:
				m[i][j] = ps[i] == ss[j] && m[i+1][j+1]
			}
		}
	}
	return m[0][0]
}
