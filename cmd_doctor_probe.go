package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// doctorProbeArg is argv[1] of the hidden mode in which `osandbox doctor`
// re-executes itself to try the kernel features `run` needs. main
// dispatches it before the CLI parses anything.
const doctorProbeArg = "__osandbox_doctor_probe"

// Probe modes, argv[2].
const (
	probeInside   = "inside"   // already in the new namespaces: try everything, print a probeResult
	probeRootless = "rootless" // as whoever we are, create user+net namespaces and run probeInside
)

// probeResult is what one probe found; every field is "" when that step
// worked, else what failed. Later steps are "skipped" when an earlier one
// they need failed.
type probeResult struct {
	Start       string `json:"start"`        // creating the namespaces and starting the probe
	Loopback    string `json:"loopback"`     // bringing lo up (needs CAP_NET_ADMIN in the namespace)
	Listen      string `json:"listen"`       // a TCP listener on 127.0.0.1 inside
	NFTables    string `json:"nftables"`     // an nf_tables table over netlink
	NFTNat      string `json:"nft_nat"`      // a nat output chain with a redirect rule
	NFTReject   string `json:"nft_reject"`   // a filter chain with a reject rule
	OriginalDst string `json:"original_dst"` // SO_ORIGINAL_DST on a redirected connection
}

// runDoctorProbe is the hidden mode; it never returns.
func runDoctorProbe(args []string) {
	var r probeResult
	mode := ""
	if len(args) > 2 {
		mode = args[2]
	}
	switch mode {
	case probeInside:
		// The probe adds nf_tables rules: never in the caller's namespace.
		if len(args) < 4 || args[3] == "" || args[3] == netnsID() {
			r.Start = "refusing to probe: not in a new network namespace"
			break
		}
		r = probeHere()
	case probeRootless:
		r = startProbe(true, nil)
	default:
		r.Start = fmt.Sprintf("unknown probe mode %q", mode)
	}
	json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

// startProbe runs probeInside in new namespaces: user+net when rootless,
// else net only. cred, if set, is who the probe process runs as.
func startProbe(rootless bool, cred *syscall.Credential) probeResult {
	self, err := os.Executable()
	if err != nil {
		return probeResult{Start: err.Error()}
	}
	mode := probeInside
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if cred != nil {
		// Drop to cred first, then create the namespaces as that user: a
		// user namespace root creates is not subject to the limits an
		// ordinary user meets.
		mode, attr = probeRootless, &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	} else if rootless {
		uid, gid := os.Getuid(), os.Getgid()
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		attr.GidMappingsEnableSetgroups = false
		attr.AmbientCaps = []uintptr{unix.CAP_NET_ADMIN}
	}
	cmd := exec.Command(self, doctorProbeArg, mode, netnsID())
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = attr
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.WaitDelay = time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return probeResult{Start: err.Error()}
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		return probeResult{Start: "the probe did not finish within 10s"}
	}
	var r probeResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		msg := fmt.Sprintf("the probe failed: %v %s", err, bytes.TrimSpace(stderr.Bytes()))
		return probeResult{Start: msg}
	}
	return r
}

// netnsID names the network namespace this process is in.
func netnsID() string {
	id, _ := os.Readlink("/proc/self/ns/net")
	return id
}

// probeHere tries, in the namespaces it runs in, what netns does for a run.
func probeHere() probeResult {
	var r probeResult
	const skipped = "skipped"
	if err := loopbackUp(); err != nil {
		r.Loopback = err.Error()
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		r.Listen = err.Error()
		r.NFTables, r.NFTNat, r.NFTReject, r.OriginalDst = skipped, skipped, skipped, skipped
		return r
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	r.NFTables, r.NFTNat, r.NFTReject = probeNFTables(port)
	if r.NFTNat != "" {
		r.OriginalDst = skipped
		return r
	}
	r.OriginalDst = probeOriginalDst(ln)
	return r
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// probeTarget is what the probe's redirect rule catches: 127.0.0.2 is on
// lo, so no route is needed to reach the nat chain.
var probeTarget = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 2}), 9)

// probeNFTables builds, step by step, the kind of ruleset transparent
// capture installs: a table, a nat output chain that redirects probeTarget
// to port, and a filter chain with a reject rule.
func probeNFTables(port int) (table, nat, reject string) {
	conn, err := nftables.New()
	if err != nil {
		return err.Error(), "skipped", "skipped"
	}
	t := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "osandbox_doctor"})
	if err := conn.Flush(); err != nil {
		return err.Error(), "skipped", "skipped"
	}
	c := conn.AddChain(&nftables.Chain{Name: "nat", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	dst := probeTarget.Addr().As4()
	conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: dst[:]},
		&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
		&expr.Redir{RegisterProtoMin: 1},
	}})
	if err := conn.Flush(); err != nil {
		nat = err.Error()
	}
	f := conn.AddChain(&nftables.Chain{Name: "filter", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	conn.AddRule(&nftables.Rule{Table: t, Chain: f, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_SCTP}},
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
	}})
	if err := conn.Flush(); err != nil {
		reject = err.Error()
	}
	return "", nat, reject
}

// probeOriginalDst connects to probeTarget, which the nat rule sends to
// ln, and reads the original destination back as the proxy would.
func probeOriginalDst(ln net.Listener) string {
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.DialTimeout("tcp4", probeTarget.String(), 2*time.Second)
	if err != nil {
		return "connect through the redirect: " + err.Error()
	}
	defer client.Close()
	var server net.Conn
	select {
	case server = <-accepted:
	case <-time.After(2 * time.Second):
	}
	if server == nil {
		return "the redirected connection never arrived"
	}
	defer server.Close()
	raw, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err.Error()
	}
	var got netip.AddrPort
	var serr error
	raw.Control(func(fd uintptr) {
		var mreq *unix.IPv6Mreq // a 16-byte buffer: the kernel fills in a sockaddr_in
		mreq, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if serr == nil {
			b := mreq.Multiaddr
			got = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4]))
		}
	})
	switch {
	case serr != nil:
		return "getsockopt SO_ORIGINAL_DST: " + serr.Error()
	case got != probeTarget:
		return fmt.Sprintf("SO_ORIGINAL_DST said %s, want %s", got, probeTarget)
	}
	return ""
}
