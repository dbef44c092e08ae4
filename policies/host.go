package policies

import (
	"fmt"
	"net/netip"
	"strings"
)

type hostKind uint8

const (
	hostInvalid    hostKind = iota // zero HostPattern: matches nothing
	hostExact                      // "example.com"
	hostSubdomains                 // "*.example.com": subdomains only, any depth
	hostApex                       // "**.example.com": the apex and its subdomains
	hostAddr                       // "10.0.0.1", "::1"
	hostPrefix                     // "10.0.0.0/8", "fd00::/8"
)

// HostPattern is one entry of a rule's hosts: an exact name, "*.x"
// (subdomains of x only, any depth), "**.x" (x and its subdomains), an IP
// address, or a CIDR. A name pattern never matches an IP and vice versa. The
// zero HostPattern matches nothing.
type HostPattern struct {
	kind   hostKind
	name   string       // lower-case, without the wildcard prefix or trailing dot
	prefix netip.Prefix // hostAddr (full-length) and hostPrefix
}

// ParseHostPattern parses one host pattern as written in a policy file.
func ParseHostPattern(s string) (HostPattern, error) {
	if s == "" {
		return HostPattern{}, fmt.Errorf("empty host pattern")
	}
	if strings.Contains(s, "://") {
		return HostPattern{}, fmt.Errorf("host pattern %q is a URL; write the host name only", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isHostPatternByte(c) {
			return HostPattern{}, fmt.Errorf("invalid character %q in host pattern %q", c, s)
		}
	}
	if strings.Contains(s, "/") {
		return parsePrefixPattern(s)
	}
	if strings.Contains(s, "*") {
		return parseGlobPattern(s)
	}
	t, ok := parseTarget(s)
	if !ok {
		return HostPattern{}, fmt.Errorf("invalid host %q", s)
	}
	if !t.addr.IsValid() {
		return HostPattern{kind: hostExact, name: t.name}, nil
	}
	// An IP in a policy must be written the standard way; "0x7f.1" is
	// decided as 127.0.0.1 but is too easy to misread in a file.
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err != nil {
		return HostPattern{}, fmt.Errorf("host %q is the IP address %s written in a non-standard form; write %s", s, t.addr, t.addr)
	}
	return HostPattern{kind: hostAddr, prefix: netip.PrefixFrom(t.addr, t.addr.BitLen())}, nil
}

func parsePrefixPattern(s string) (HostPattern, error) {
	pf, err := netip.ParsePrefix(s)
	if err != nil {
		return HostPattern{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if pf != pf.Masked() {
		return HostPattern{}, fmt.Errorf("CIDR %q has bits set past the prefix length; did you mean %s?", s, pf.Masked())
	}
	if a := pf.Addr(); a.Is4In6() && pf.Bits() >= 96 {
		pf = netip.PrefixFrom(a.Unmap(), pf.Bits()-96)
	}
	return HostPattern{kind: hostPrefix, prefix: pf}, nil
}

func parseGlobPattern(s string) (HostPattern, error) {
	kind, rest := hostInvalid, ""
	switch {
	case strings.HasPrefix(s, "**."):
		kind, rest = hostApex, s[3:]
	case strings.HasPrefix(s, "*."):
		kind, rest = hostSubdomains, s[2:]
	}
	if kind == hostInvalid || strings.Contains(rest, "*") {
		return HostPattern{}, fmt.Errorf(`bad glob %q: "*" may appear only as a leading "*." or "**."`, s)
	}
	rest = strings.TrimSuffix(rest, ".")
	if !validName(rest) || numericLastLabel(rest) {
		return HostPattern{}, fmt.Errorf("bad glob %q: %q is not a valid host name", s, rest)
	}
	return HostPattern{kind: kind, name: strings.ToLower(rest)}, nil
}

func isHostPatternByte(c byte) bool {
	return isNameByte(c) || c == '.' || c == '*' || c == ':' || c == '/' || c == '[' || c == ']'
}

// String returns the pattern in canonical form: "example.com",
// "*.example.com", "**.example.com", "10.0.0.1", "10.0.0.0/8".
func (h HostPattern) String() string {
	switch h.kind {
	case hostExact:
		return h.name
	case hostSubdomains:
		return "*." + h.name
	case hostApex:
		return "**." + h.name
	case hostAddr:
		return h.prefix.Addr().String()
	case hostPrefix:
		return h.prefix.String()
	}
	return ""
}

// Prefix returns the addresses an IP or CIDR pattern names; ok is false for
// a name pattern.
func (h HostPattern) Prefix() (p netip.Prefix, ok bool) {
	if h.kind == hostAddr || h.kind == hostPrefix {
		return h.prefix, true
	}
	return netip.Prefix{}, false
}

// Match reports whether host matches the pattern. host is a name
// (case-insensitive, trailing dot ignored) or an IP literal; it goes through
// the same canonicalisation as CanonicalHost, and an invalid host matches
// nothing.
func (h HostPattern) Match(host string) bool {
	t, ok := parseTarget(host)
	return ok && h.matchTarget(&t)
}

func (h *HostPattern) matchTarget(t *target) bool {
	switch h.kind {
	case hostAddr, hostPrefix:
		return t.addr.IsValid() && h.prefix.Contains(t.addr)
	case hostExact:
		return t.name == h.name
	case hostApex:
		if t.name == h.name {
			return true
		}
		fallthrough
	case hostSubdomains:
		n := len(t.name) - len(h.name)
		return n > 1 && t.name[n-1] == '.' && t.name[n:] == h.name
	}
	return false
}
