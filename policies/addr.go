package policies

import "net/netip"

// AddrAllowed is the SSRF guard for one resolved address the proxy is about
// to dial on behalf of decision d: true if ip is not special (see Special),
// or it lies in d.Addrs (the deciding rule named it) or in p.AllowPrivate.
// IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses are
// judged as the IPv4 address they carry; a prefix naming the IPv6 form
// itself also counts. An invalid ip is never allowed. AddrAllowed does not
// look at d.Action: call it only for addresses of an allowed decision.
func (p *Policy) AddrAllowed(d Decision, ip netip.Addr) bool {
	ip = ip.WithZone("")
	v4 := unmap(ip)
	if !Special(v4) {
		return true
	}
	for _, pf := range d.Addrs {
		if pf.Contains(v4) || pf.Contains(ip) {
			return true
		}
	}
	if p != nil {
		for _, pf := range p.AllowPrivate {
			if pf.Contains(v4) || pf.Contains(ip) {
				return true
			}
		}
	}
	return false
}

// Special reports whether ip is an address an egress proxy must not dial
// unless told to: loopback, RFC 1918, link-local (169.254/16, fe80::/10),
// CGNAT (100.64/10), ULA (fc00::/7), unspecified, multicast, broadcast,
// 0.0.0.0/8, documentation, benchmarking and other reserved ranges, any IPv6
// outside global unicast 2000::/3, deprecated transition ranges (6to4
// 2002::/16, Teredo and the rest of 2001::/23, IPv4-compatible ::/96,
// site-local fec0::/10), local-use NAT64 64:ff9b:1::/48, and the
// IPv4-mapped and NAT64 (64:ff9b::/96) forms of special IPv4 addresses. The
// zero Addr is special.
func Special(ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	ip = unmap(ip.WithZone(""))
	if ip.Is4() {
		return special4(ip.As4())
	}
	return special6(ip.As16())
}

// unmap turns ::ffff:a.b.c.d and 64:ff9b::a.b.c.d into a.b.c.d.
func unmap(ip netip.Addr) netip.Addr {
	if ip.Is4In6() {
		return ip.Unmap()
	}
	if ip.Is6() {
		a := ip.As16()
		if a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && allZero(a[4:12]) {
			return netip.AddrFrom4([4]byte(a[12:16]))
		}
	}
	return ip
}

func special4(a [4]byte) bool {
	switch {
	case a[0] == 0: // 0.0.0.0/8 "this network", unspecified
	case a[0] == 10: // RFC 1918
	case a[0] == 100 && a[1]&0xc0 == 64: // 100.64.0.0/10 CGNAT
	case a[0] == 127: // loopback
	case a[0] == 169 && a[1] == 254: // link-local, cloud metadata
	case a[0] == 172 && a[1]&0xf0 == 16: // RFC 1918
	case a[0] == 192 && a[1] == 0 && a[2] == 0: // IETF protocol assignments
	case a[0] == 192 && a[1] == 0 && a[2] == 2: // TEST-NET-1
	case a[0] == 192 && a[1] == 88 && a[2] == 99: // 6to4 relay anycast (deprecated)
	case a[0] == 192 && a[1] == 168: // RFC 1918
	case a[0] == 198 && a[1]&0xfe == 18: // 198.18.0.0/15 benchmarking
	case a[0] == 198 && a[1] == 51 && a[2] == 100: // TEST-NET-2
	case a[0] == 203 && a[1] == 0 && a[2] == 113: // TEST-NET-3
	case a[0] >= 224: // multicast 224/4, reserved 240/4, broadcast
	default:
		return false
	}
	return true
}

func special6(a [16]byte) bool {
	switch {
	case a[0]&0xe0 != 0x20: // outside 2000::/3: ::/96, ULA, link-local, multicast, reserved
	case a[0] == 0x20 && a[1] == 0x01 && a[2]&0xfe == 0: // 2001::/23 IETF protocol assignments, Teredo
	case a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8: // 2001:db8::/32 documentation
	case a[0] == 0x20 && a[1] == 0x02: // 2002::/16 6to4 (deprecated)
	case a[0] == 0x3f && a[1] == 0xff && a[2]&0xf0 == 0: // 3fff::/20 documentation
	default:
		return false
	}
	return true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
