package policies

import (
	"fmt"
	"strings"
)

// anyPath is the pattern that matches every path, and what an http entry
// without paths means.
const anyPath = "/**"

// checkPathPattern validates a path pattern: it starts with "/", its segments
// are "*", "**" or literals without '*', no segment but the last is empty,
// and it holds no "." or ".." segment, query, fragment, space or control
// character (the proxy matches cleaned paths without their query).
func checkPathPattern(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("path pattern %q must start with \"/\"", s)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c == 0x7f:
			return fmt.Errorf("path pattern %q: invalid character %q", s, c)
		case c == '?' || c == '#':
			return fmt.Errorf("path pattern %q: %q is not allowed (paths are matched without query or fragment)", s, c)
		}
	}
	segs := strings.Split(s[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "*" || seg == "**":
		case strings.Contains(seg, "*"):
			return fmt.Errorf(`path pattern %q: bad glob segment %q ("*" and "**" must be whole segments)`, s, seg)
		case seg == "" && i < len(segs)-1:
			return fmt.Errorf("path pattern %q: empty segment", s)
		case seg == "." || seg == "..":
			return fmt.Errorf("path pattern %q: %q segment never matches a cleaned path", s, seg)
		}
	}
	return nil
}

// matchPath reports whether path matches pattern, segment by segment: "*"
// matches one non-empty segment, "**" any number of segments (zero too),
// anything else itself. "/**" matches every path, even one that does not
// start with "/" (such as the "*" of OPTIONS *); no other pattern does. It
// does not allocate, and runs in O(len(pattern)*len(path)) at worst.
func matchPath(pattern, path string) bool {
	if pattern == anyPath {
		return true
	}
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(pattern, "/") || !strings.HasPrefix(path, "/") {
		return false
	}
	// Cursors are offsets of a segment's first byte; a cursor past the end
	// means no segments are left. This is the classic greedy wildcard match
	// with "**" as the star and "*" as the single-item wildcard.
	pi, si := 1, 1
	starP, starS := -1, -1
	for si <= len(path) {
		pseg, pnext := segment(pattern, pi)
		sseg, snext := segment(path, si)
		switch {
		case pi <= len(pattern) && pseg == "**":
			starP, starS = pnext, si
			pi = pnext
		case pi <= len(pattern) && (pseg == sseg || pseg == "*" && sseg != ""):
			pi, si = pnext, snext
		case starP >= 0:
			_, starS = segment(path, starS)
			pi, si = starP, starS
		default:
			return false
		}
	}
	for pi <= len(pattern) {
		pseg, pnext := segment(pattern, pi)
		if pseg != "**" {
			return false
		}
		pi = pnext
	}
	return true
}

// segment returns the segment of s that starts at offset i and the offset of
// the next one (past len(s) when this is the last).
func segment(s string, i int) (seg string, next int) {
	if i > len(s) {
		return "", i
	}
	j := strings.IndexByte(s[i:], '/')
	if j < 0 {
		return s[i:], len(s) + 1
	}
	return s[i : i+j], i + j + 1
}
