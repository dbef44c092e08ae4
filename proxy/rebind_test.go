package proxy

// Resolve-check-dial under a hostile resolver: DNS rebinding (a name that
// resolves to a public address, then to a private one, or the reverse),
// mixed answers, and names that are IP literals. The resolver is injected
// and the dialer's dialAddr is replaced before the proxy serves, so the
// tests see every address the proxy would dial and nothing but loopback is
// ever connected to: the "public" addresses are TEST-NET-3 (203.0.113.0/24,
// which the policy's allow_private lets the guard pass, standing in for the
// internet), and dialAddr reaches the local upstream in their place.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// rebindHost is the name the hostile resolver answers for.
const rebindHost = "rebind.test"

// scriptedResolver answers each look-up of a name with the next answer of
// its script (the last one repeats) and records every call.
type scriptedResolver struct {
	mu     sync.Mutex
	script map[string][][]netip.Addr
	calls  []string
}

func (r *scriptedResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, host)
	answers := r.script[host]
	if len(answers) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	a := answers[0]
	if len(answers) > 1 {
		r.script[host] = answers[1:]
	}
	return a, nil
}

func (r *scriptedResolver) lookups() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// dialRecorder replaces the dialer's dialAddr: it records every address
// the proxy tries and connects only to loopback, sending the addresses in
// route to the local upstream and refusing all others.
type dialRecorder struct {
	mu     sync.Mutex
	dialed []netip.AddrPort
	route  map[netip.Addr]string // dialled address -> the loopback address really used
}

func (d *dialRecorder) dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, ap)
	real, ok := d.route[ap.Addr()]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("test dialer: refusing %s (connection refused)", ap)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", real)
}

func (d *dialRecorder) addrs() []netip.AddrPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dialed)
}

var (
	public1   = netip.MustParseAddr("203.0.113.10") // "public": allow_private lets the guard pass it
	public2   = netip.MustParseAddr("203.0.113.11") // "public", but nothing answers there
	loopback  = netip.MustParseAddr("127.0.0.1")
	rfc1918   = netip.MustParseAddr("10.0.0.1")
	metadata  = netip.MustParseAddr("169.254.169.254")
	mapped    = netip.MustParseAddr("::ffff:10.0.0.1")
	nat64Meta = netip.MustParseAddr("64:ff9b::a9fe:a9fe")
	ula       = netip.MustParseAddr("fd00::1")
)

// rebindPolicy allows rebindHost on port (any request, any upgrade) and
// lets the guard pass TEST-NET-3 only.
func rebindPolicy(port int) string {
	return fmt.Sprintf(`version: 1
allow:
  - name: rebind
    hosts: [%s]
    ports: [%d]
allow_private: [203.0.113.0/24]
`, rebindHost, port)
}

// rebindAttempt is one request through the proxy to rebindHost: its
// status (0 when the connection closed without one).
type rebindAttempt func(t *testing.T, tp *testProxy, port int) int

// rebindPaths are the ways a client makes the proxy dial rebindHost.
var rebindPaths = []struct {
	name string
	do   rebindAttempt
}{
	{"forward", func(t *testing.T, tp *testProxy, port int) int {
		return rebindExchange(t, tp, fmt.Sprintf("GET http://%s:%d/x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
			rebindHost, port, rebindHost), "")
	}},
	{"connect", func(t *testing.T, tp *testProxy, port int) int {
		return rebindExchange(t, tp, fmt.Sprintf("CONNECT %s:%d HTTP/1.1\r\nHost: %[1]s:%[2]d\r\n\r\n", rebindHost, port),
			"GET /x HTTP/1.1\r\nHost: "+rebindHost+"\r\nConnection: close\r\n\r\n")
	}},
	{"forward_upgrade", func(t *testing.T, tp *testProxy, port int) int {
		return rebindExchange(t, tp, fmt.Sprintf("GET http://%s:%d/up HTTP/1.1\r\nHost: %[1]s\r\n"+
			"Connection: Upgrade\r\nUpgrade: example-echo/1\r\n\r\n", rebindHost, port), "")
	}},
}

// rebindExchange sends first and reads the answer; after a 200 to a
// CONNECT it sends then inside the tunnel and reads that answer. A 101 is
// checked with one echoed message and reported as 200. It returns the
// last status.
func rebindExchange(t *testing.T, tp *testProxy, first, then string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", tp.Addr, relayTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(relayTimeout))
	br := bufio.NewReader(c)
	io.WriteString(c, first)
	method := http.MethodGet
	if then != "" {
		method = http.MethodConnect
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return 0
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		io.WriteString(c, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
			t.Errorf("echo after the switch: %q, %v", b, err)
		}
		return http.StatusOK // a working switch counts as success, like a 200
	}
	if then == "" || resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	io.WriteString(c, then)
	resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("inside the tunnel: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestRebindingDialsOnlyCheckedAddresses: however the answers for a name
// change between look-ups, each request resolves it once, and the proxy
// dials only addresses from that one answer that the SSRF guard passed. A
// private answer is refused (403 private_address) with no dial at all;
// when the checked address does not answer, the proxy gives up (502)
// rather than try an unchecked one.
func TestRebindingDialsOnlyCheckedAddresses(t *testing.T) {
	up := startRawUpstream(t, echoUpstream)
	local := fmt.Sprintf("127.0.0.1:%d", up.port)
	cases := []struct {
		name    string
		answers [][]netip.Addr // one per request, in order
		want    []int          // status per request
		dialed  [][]netip.Addr // addresses tried per request
	}{
		{"public_then_private", [][]netip.Addr{{public1}, {loopback}},
			[]int{200, 403}, [][]netip.Addr{{public1}, nil}},
		{"private_then_public", [][]netip.Addr{{rfc1918}, {public1}},
			[]int{403, 200}, [][]netip.Addr{nil, {public1}}},
		{"metadata_then_public_then_mapped", [][]netip.Addr{{metadata}, {public1}, {mapped}},
			[]int{403, 200, 403}, [][]netip.Addr{nil, {public1}, nil}},
		{"mixed_private_first", [][]netip.Addr{{loopback, metadata, public1}},
			[]int{200}, [][]netip.Addr{{public1}}},
		{"checked_address_down", [][]netip.Addr{{public2, rfc1918, loopback}},
			[]int{502}, [][]netip.Addr{{public2}}},
		{"ipv6_forms", [][]netip.Addr{{nat64Meta, ula}, {mapped}},
			[]int{403, 403}, [][]netip.Addr{nil, nil}},
	}
	for _, path := range rebindPaths {
		for _, tc := range cases {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				res := &scriptedResolver{script: map[string][][]netip.Addr{rebindHost: tc.answers}}
				rec := &dialRecorder{route: map[netip.Addr]string{public1: local}}
				tp := startProxyHooked(t, rebindPolicy(up.port), func(c *Config) { c.Resolver = res },
					func(p *Proxy) { p.dialer.dialAddr = rec.dial })
				for i, want := range tc.want {
					before := len(rec.addrs())
					status := path.do(t, tp, up.port)
					if status != want {
						t.Errorf("request %d: status %d, want %d", i, status, want)
					}
					var got []netip.Addr
					for _, ap := range rec.addrs()[before:] {
						got = append(got, ap.Addr())
						if int(ap.Port()) != up.port {
							t.Errorf("request %d dialled port %d", i, ap.Port())
						}
					}
					if !slices.Equal(got, tc.dialed[i]) {
						t.Errorf("request %d dialled %v, want %v", i, got, tc.dialed[i])
					}
				}
				if n := len(res.lookups()); n != len(tc.want) {
					t.Errorf("%d look-ups for %d requests: %v", n, len(tc.want), res.lookups())
				}
				for _, e := range tp.events(t) {
					if e.Dst != "" && e.Dst != local {
						t.Errorf("audit dst %q: the proxy connected somewhere other than the routed upstream", e.Dst)
					}
					if e.Reason == string(policies.ReasonPrivateAddress) && e.Decision != audit.DecisionDeny {
						t.Errorf("private_address audited as %s", e.Decision)
					}
				}
			})
		}
	}
}

// TestDialerNeverResolvesIPLiterals: a host that is an IP literal in any
// form is dialled as the address it denotes: it never goes to the resolver
// (where a search domain or a wildcard record could make it any address),
// and the guard judges that address. A connection made to the DNS stub's
// answer for such a name is decided, audited and dialled as 127.0.0.1 too.
func TestDialerNeverResolvesIPLiterals(t *testing.T) {
	res := &scriptedResolver{script: map[string][][]netip.Addr{}}
	rec := &dialRecorder{route: map[netip.Addr]string{}}
	pol := `version: 1
allow:
  - name: lo
    hosts: [127.0.0.1]
    ports: [9]
`
	tp := startProxyHooked(t, pol, func(c *Config) { c.Resolver = res },
		func(p *Proxy) { p.dialer.dialAddr = rec.dial })
	forms := []string{"127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]"}
	for _, host := range forms {
		// Each form is decided as 127.0.0.1 ...
		dec := tp.decide(policies.Request{Host: host, Port: 9})
		if dec.Action != policies.Allow {
			t.Errorf("%s: decided %+v, want the lo rule", host, dec)
			continue
		}
		// ... and the DNS stub hands out an address for it (the capture
		// path later dials the name it maps back to).
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(host), dns.TypeA)
		resp := tp.dnsAnswer(q)
		rr, ok := (*dns.A)(nil), false
		if resp.Rcode == dns.RcodeSuccess && len(resp.Answer) == 1 {
			rr, ok = resp.Answer[0].(*dns.A)
		}
		if !ok {
			t.Errorf("%s: stub answered %v", host, resp)
			continue
		}
		a, _ := netip.AddrFromSlice(rr.A.To4())
		name := a.String() // answered with the address itself: a connection to it is decided as that IP
		if syntheticNet.Contains(a) {
			// The capture path decides, audits and dials the name it maps back.
			name, _ = tp.names.nameOf(a)
		}
		if name != "127.0.0.1" {
			t.Errorf("%s: the stub's answer %s stands for %q; the capture path would audit and dial that, not 127.0.0.1",
				host, a, name)
		}
		_, err := tp.dialer.dial(context.Background(), dec, name, 9)
		if err == nil {
			t.Errorf("%s: the test dialer connected", host)
		}
	}
	if calls := res.lookups(); len(calls) != 0 {
		t.Errorf("IP literals went to the resolver: %q", calls)
	}
	for _, ap := range rec.addrs() {
		if ap.Addr() != loopback {
			t.Errorf("dialled %s, want 127.0.0.1 only", ap)
		}
	}
}

// TestDNSStubNeverResolves: the stub answers from the policy alone. A name
// no rule allows gets NXDOMAIN and is audited as a dns deny; an allowed one
// gets a synthetic address; malformed and unusual queries get an error
// answer or none, and the stub keeps serving. The proxy's resolver is never
// asked, so no query for any of these names leaves the machine.
func TestDNSStubNeverResolves(t *testing.T) {
	res := &scriptedResolver{script: map[string][][]netip.Addr{}}
	pol := `version: 1
allow:
  - name: ok
    hosts: [allowed.test, "*.glob.test"]
`
	tp := startProxyHooked(t, pol, func(c *Config) { c.Resolver = res }, func(*Proxy) {})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- tp.ServeDNS(pc) }()
	t.Cleanup(func() {
		tp.Close()
		select {
		case <-served:
		case <-time.After(relayTimeout):
			t.Error("ServeDNS did not return after Close")
		}
	})
	client := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), qtype)
		var resp *dns.Msg
		var err error
		for range 3 { // the stub may not be serving yet
			if resp, _, err = client.Exchange(q, pc.LocalAddr().String()); err == nil {
				return resp
			}
		}
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
		return nil
	}
	cases := []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"denied.example", dns.TypeA, dns.RcodeNameError},
		{"denied.example", dns.TypeAAAA, dns.RcodeNameError},
		{"denied.example", dns.TypeTXT, dns.RcodeNameError},
		{"denied.example", dns.TypeANY, dns.RcodeNameError},
		{"glob.test", dns.TypeA, dns.RcodeNameError},
		{"allowed.test.evil.example", dns.TypeA, dns.RcodeNameError},
		{"allowed.test", dns.TypeA, dns.RcodeSuccess},
		{"a.glob.test", dns.TypeAAAA, dns.RcodeSuccess},
		{"allowed.test", dns.TypeCNAME, dns.RcodeSuccess},
	}
	for _, tc := range cases {
		resp := ask(tc.name, tc.qtype)
		if resp.Rcode != tc.rcode {
			t.Errorf("%s %s: rcode %s, want %s", tc.name, dns.TypeToString[tc.qtype],
				dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
		}
		for _, rr := range resp.Answer {
			a, ok := rr.(*dns.A)
			if !ok || !syntheticNet.Contains(netip.AddrFrom4([4]byte(a.A.To4()))) {
				t.Errorf("%s: answer %v is not a synthetic A record", tc.name, rr)
			}
		}
	}

	// Malformed packets and unusual messages: answered with an error or
	// dropped, never a crash; the stub still answers afterwards.
	raw, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	two := new(dns.Msg)
	two.SetQuestion("allowed.test.", dns.TypeA)
	two.Question = append(two.Question, dns.Question{Name: "denied.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	twoBytes, _ := two.Pack()
	update := new(dns.Msg)
	update.SetUpdate("allowed.test.")
	updateBytes, _ := update.Pack()
	for _, b := range [][]byte{{}, {0}, []byte("garbage that is not DNS"), make([]byte, 12), twoBytes, updateBytes,
		append([]byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63}, make([]byte, 600)...)} {
		if _, err := raw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if resp := ask("allowed.test", dns.TypeA); resp.Rcode != dns.RcodeSuccess {
		t.Errorf("after malformed packets: %v", resp)
	}
	if resp, _, err := client.Exchange(two, pc.LocalAddr().String()); err == nil && resp.Rcode == dns.RcodeSuccess {
		t.Errorf("two questions answered %v, want an error rcode", resp)
	}

	if calls := res.lookups(); len(calls) != 0 {
		t.Errorf("the stub's names went to the resolver: %q", calls)
	}
	var denied int
	for _, e := range eventsOf(tp.events(t), audit.EventDNS) {
		if e.Decision == audit.DecisionDeny {
			denied++
			if e.Reason != string(policies.ReasonNoMatchingRule) || e.Proto != audit.ProtoDNS {
				t.Errorf("dns deny audited as %+v", e)
			}
		}
	}
	// Six named denials, and the 63-NUL label of the last odd packet,
	// which is a question too.
	if denied != 7 {
		t.Errorf("%d dns deny events, want 7 (one per denied question)", denied)
	}
}
