package policies

import (
	"net/netip"
	"strings"
)

// target is a host in the form Decide matches on: exactly one of name and
// addr is set.
type target struct {
	name string     // lower-case, no trailing dot
	addr netip.Addr // unmapped (no ::ffff: form), no zone
}

// CanonicalHost turns the host a client asked for (CONNECT target, URI
// authority, Host header or SNI, without the port) into the form Decide
// matches on: names are lower-cased with one trailing dot removed; IP
// literals in any form become the canonical address string. IPv4 literals
// follow inet_aton: one to four dot-separated parts, each decimal, octal
// (leading 0) or hex (0x), the last filling the remaining bytes, so
// "2130706433", "0177.0.0.1", "0x7f.1" and "127.1" are all "127.0.0.1".
// IPv6 may be bracketed; "[::ffff:127.0.0.1]" is "127.0.0.1".
//
// ok is false for an empty host, a character outside letters, digits, '-',
// '_' and '.', an empty or over-long label, an IPv6 zone, or a name whose
// last label is numeric but which is not a valid IPv4 literal
// ("1.2.3.256", "0x100000000"): such a name is ambiguous, never a real host.
func CanonicalHost(host string) (canon string, ok bool) {
	t, ok := parseTarget(host)
	if !ok {
		return "", false
	}
	if t.addr.IsValid() {
		return t.addr.String(), true
	}
	return t.name, true
}

func parseTarget(host string) (target, bool) {
	if host == "" {
		return target{}, false
	}
	if host[0] == '[' {
		if len(host) < 2 || host[len(host)-1] != ']' {
			return target{}, false
		}
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return target{}, false
		}
		return target{addr: a.Unmap()}, true
	}
	if strings.IndexByte(host, ':') >= 0 {
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return target{}, false
		}
		return target{addr: a.Unmap()}, true
	}
	h := strings.TrimSuffix(host, ".")
	if a, ok := parseIPv4(h); ok {
		return target{addr: a}, true
	}
	if !validName(h) || numericLastLabel(h) {
		return target{}, false
	}
	if hasUpper(h) {
		h = strings.ToLower(h)
	}
	return target{name: h}, true
}

// parseIPv4 parses s by the rules of inet_aton(3).
func parseIPv4(s string) (netip.Addr, bool) {
	if s == "" || !isDigit(s[0]) {
		return netip.Addr{}, false
	}
	var parts [4]uint32
	n := 0
	for {
		i := strings.IndexByte(s, '.')
		part := s
		if i >= 0 {
			part = s[:i]
		}
		if n == len(parts) {
			return netip.Addr{}, false
		}
		v, ok := parseIPv4Part(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	var v uint32
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
		v |= parts[i] << (24 - 8*i)
	}
	last := parts[n-1]
	if bits := 8 * (5 - n); bits < 32 && last >= 1<<bits {
		return netip.Addr{}, false
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Part parses one inet_aton part: decimal, octal with a leading 0,
// or hex with 0x (at least one hex digit). Values above 2^32-1 fail.
func parseIPv4Part(p string) (uint32, bool) {
	if p == "" {
		return 0, false
	}
	base, digits := uint64(10), p
	if len(p) > 1 && p[0] == '0' {
		if p[1] == 'x' || p[1] == 'X' {
			base, digits = 16, p[2:]
			if digits == "" {
				return 0, false
			}
		} else {
			base, digits = 8, p[1:]
		}
	}
	var v uint64
	for i := 0; i < len(digits); i++ {
		d, ok := digitValue(digits[i])
		if !ok || d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return uint32(v), true
}

func digitValue(c byte) (uint64, bool) {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0'), true
	case 'a' <= c && c <= 'f':
		return uint64(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}

// validName reports whether s is a DNS name (without trailing dot) made of
// 1-63 byte labels of letters, digits, '-' and '_', at most 253 bytes long.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case isNameByte(c):
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}

// numericLastLabel reports whether the last label of s looks like a number
// (all digits, or 0x and hex digits), which makes s an IPv4 literal or
// nothing.
func numericLastLabel(s string) bool {
	last := s[strings.LastIndexByte(s, '.')+1:]
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		last = last[2:]
		for i := 0; i < len(last); i++ {
			if _, ok := digitValue(last[i]); !ok {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(last); i++ {
		if !isDigit(last[i]) {
			return false
		}
	}
	return last != ""
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || isDigit(c) || c == '-' || c == '_'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
