package netns

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Capture asks init to force traffic that ignores the proxy variables to
// the given loopback ports: every TCP connection not bound for 127.0.0.0/8
// to TCPPort, and all UDP port 53 to DNSPort. Other UDP and non-loopback
// IPv6 are rejected at once, so clients fail fast instead of timing out.
type Capture struct {
	TCPPort int `json:"tcp_port"`
	DNSPort int `json:"dns_port"`
}

// setupCapture installs the route and the nftables rules, over netlink
// only: no ip or nft binary.
func setupCapture(c Capture) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "osandbox"})
	nat := conn.AddChain(&nftables.Chain{
		Name: "capture", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
	})
	// All DNS first, even to a 127.0.0.x resolver, so nothing asks a real one.
	conn.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: concat(
		matchNFProto(unix.NFPROTO_IPV4), matchL4(unix.IPPROTO_UDP), matchDport(53), redirectTo(c.DNSPort))})
	conn.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: concat(
		matchNFProto(unix.NFPROTO_IPV4), matchDaddr4Loopback(), verdict(expr.VerdictReturn))})
	conn.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: concat(
		matchNFProto(unix.NFPROTO_IPV4), matchL4(unix.IPPROTO_TCP), redirectTo(c.TCPPort))})

	filter := conn.AddChain(&nftables.Chain{
		Name: "reject", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter,
	})
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: concat(
		matchNFProto(unix.NFPROTO_IPV4), matchDaddr4Loopback(), verdict(expr.VerdictAccept))})
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: concat(
		matchNFProto(unix.NFPROTO_IPV6), matchDaddr6Loopback(), verdict(expr.VerdictAccept))})
	// Whatever is left (UDP, QUIC, ICMP, IPv6) is refused with an ICMP
	// unreachable or a TCP reset, so the caller learns at once.
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: concat(
		matchL4(unix.IPPROTO_TCP), []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}})})
	conn.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: []expr.Any{
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables rules: %w", err)
	}
	// The route comes last: without the rules, a route via lo would leave
	// connections to other addresses waiting for an answer that never
	// comes; without the route they fail at once (ENETUNREACH).
	if err := addDefaultRouteViaLo(); err != nil {
		return fmt.Errorf("default route via lo: %w", err)
	}
	return nil
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func matchNFProto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func matchL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func matchDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)},
	}
}

// matchDaddr4Loopback matches ip daddr 127.0.0.0/8.
func matchDaddr4Loopback() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127, 0, 0, 0}},
	}
}

// matchDaddr6Loopback matches ip6 daddr ::1.
func matchDaddr6Loopback() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net.IPv6loopback},
	}
}

func redirectTo(port int) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: be16(uint16(port))},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func be16(v uint16) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, v)
	return b
}

// addDefaultRouteViaLo sends RTM_NEWROUTE for 0.0.0.0/0 dev lo, so that a
// connect to any address reaches the nat chain instead of failing with
// "network unreachable" before capture can see it.
func addDefaultRouteViaLo() error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	rtm := unix.RtMsg{
		Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST,
	}
	// RTA_OIF lo, and RTA_PREFSRC 127.0.0.1: lo's address has host scope,
	// so without a preferred source the kernel would pick 0.0.0.0.
	attr := make([]byte, 16)
	binary.NativeEndian.PutUint16(attr[0:], 8)
	binary.NativeEndian.PutUint16(attr[2:], unix.RTA_OIF)
	binary.NativeEndian.PutUint32(attr[4:], uint32(lo.Index))
	binary.NativeEndian.PutUint16(attr[8:], 8)
	binary.NativeEndian.PutUint16(attr[10:], unix.RTA_PREFSRC)
	copy(attr[12:], []byte{127, 0, 0, 1})
	body := append((*[unix.SizeofRtMsg]byte)(unsafe.Pointer(&rtm))[:], attr...)
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + len(body)),
		Type:  unix.RTM_NEWROUTE,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL,
		Seq:   1,
	}
	msg := append((*[unix.SizeofNlMsghdr]byte)(unsafe.Pointer(&hdr))[:], body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	return readNetlinkAck(fd)
}

func readNetlinkAck(fd int) error {
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return unix.Errno(-code)
			}
		}
	}
	return nil
}
