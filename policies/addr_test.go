package policies

import (
	"net/netip"
	"testing"
)

func TestSpecial(t *testing.T) {
	cases := []struct {
		name, ip string
		want     bool
	}{
		{"public v4", "93.184.216.34", false},
		{"public v4 dns", "8.8.8.8", false},
		{"this network", "0.1.2.3", true},
		{"unspecified v4", "0.0.0.0", true},
		{"rfc1918 10", "10.255.0.1", true},
		{"cgnat", "100.64.0.1", true},
		{"cgnat end", "100.127.255.255", true},
		{"below cgnat", "100.63.255.255", false},
		{"above cgnat", "100.128.0.0", false},
		{"loopback", "127.0.0.1", true},
		{"loopback other", "127.255.0.9", true},
		{"link-local metadata", "169.254.169.254", true},
		{"rfc1918 172", "172.16.0.1", true},
		{"rfc1918 172 end", "172.31.255.255", true},
		{"not rfc1918 172.32", "172.32.0.1", false},
		{"ietf 192.0.0", "192.0.0.8", true},
		{"test-net-1", "192.0.2.1", true},
		{"6to4 relay", "192.88.99.1", true},
		{"rfc1918 192.168", "192.168.1.1", true},
		{"benchmark", "198.19.0.1", true},
		{"not benchmark", "198.20.0.1", false},
		{"test-net-2", "198.51.100.7", true},
		{"test-net-3", "203.0.113.7", true},
		{"multicast", "224.0.0.1", true},
		{"reserved", "240.0.0.1", true},
		{"broadcast", "255.255.255.255", true},
		{"public v6", "2606:4700:4700::1111", false},
		{"unspecified v6", "::", true},
		{"loopback v6", "::1", true},
		{"v4-compatible", "::8.8.8.8", true},
		{"mapped loopback", "::ffff:127.0.0.1", true},
		{"mapped private", "::ffff:10.0.0.1", true},
		{"mapped public", "::ffff:8.8.8.8", false},
		{"nat64 loopback", "64:ff9b::127.0.0.1", true},
		{"nat64 metadata", "64:ff9b::a9fe:a9fe", true},
		{"nat64 public", "64:ff9b::8.8.8.8", false},
		{"nat64 local-use", "64:ff9b:1::8.8.8.8", true},
		{"discard", "100::1", true},
		{"teredo", "2001:0:4136:e378::1", true},
		{"documentation", "2001:db8::1", true},
		{"6to4", "2002:a00:1::1", true},
		{"documentation 3fff", "3fff::1", true},
		{"srv6", "5f00::1", true},
		{"ula", "fd12:3456::1", true},
		{"ula fc", "fc00::1", true},
		{"link-local v6", "fe80::1", true},
		{"link-local v6 zone", "fe80::1%eth0", true},
		{"site-local", "fec0::1", true},
		{"multicast v6", "ff02::1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Special(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Errorf("Special(%s) = %v, want %v", tc.ip, got, tc.want)
			}
		})
	}
	if !Special(netip.Addr{}) {
		t.Error("Special(zero Addr) = false, want true")
	}
}

func TestAddrAllowed(t *testing.T) {
	p := mustParse(t, "version: 1\nallow:\n  - name: r\n    hosts: [10.1.0.0/16, 64:ff9b::a02:303, x.example]\nallow_private: [127.0.0.1/32, fd00::/8]\n")
	rule := p.Decide(Request{Host: "x.example", Port: 443})
	if len(rule.Addrs) != 2 {
		t.Fatalf("Decide Addrs = %v", rule.Addrs)
	}
	none := Decision{Action: Allow}
	cases := []struct {
		name string
		d    Decision
		ip   string
		want bool
	}{
		{"public", none, "8.8.8.8", true},
		{"public v6", none, "2606:4700::1", true},
		{"private refused", none, "10.1.2.3", false},
		{"named by rule", rule, "10.1.2.3", true},
		{"rule names other range", rule, "10.2.0.1", false},
		{"mapped named by rule", rule, "::ffff:10.1.2.3", true},
		{"nat64 named by rule", rule, "64:ff9b::a01:203", true},
		{"nat64 form named itself", rule, "64:ff9b::a02:303", true},
		{"v4 of nat64 form not named", rule, "10.2.3.3", false},
		{"allow_private", none, "127.0.0.1", true},
		{"allow_private mapped", none, "::ffff:127.0.0.1", true},
		{"allow_private nat64", none, "64:ff9b::7f00:1", true},
		{"allow_private other loopback", none, "127.0.0.2", false},
		{"allow_private v6", none, "fd00::5", true},
		{"allow_private v6 zone", none, "fd00::5%eth0", true},
		{"loopback v6 refused", none, "::1", false},
		{"metadata refused", none, "169.254.169.254", false},
		{"metadata mapped refused", none, "::ffff:169.254.169.254", false},
		{"metadata nat64 refused", none, "64:ff9b::a9fe:a9fe", false},
		{"link-local v6 refused", none, "fe80::1%eth0", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.AddrAllowed(tc.d, netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Errorf("AddrAllowed(%v, %s) = %v, want %v", tc.d.Addrs, tc.ip, got, tc.want)
			}
		})
	}
	t.Run("zero addr", func(t *testing.T) {
		if p.AddrAllowed(rule, netip.Addr{}) {
			t.Error("zero Addr allowed")
		}
	})
	t.Run("nil policy", func(t *testing.T) {
		var np *Policy
		if np.AddrAllowed(none, netip.MustParseAddr("127.0.0.1")) || !np.AddrAllowed(none, netip.MustParseAddr("1.1.1.1")) {
			t.Error("nil policy: want loopback refused, public allowed")
		}
	})
}
