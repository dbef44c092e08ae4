package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/osandbox/osandbox/policies"
)

// Resolver looks up the addresses of a name. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DenyError is a dial refused by the SSRF guard: every address the name
// resolved to is one the policy does not let the proxy dial.
type DenyError struct {
	Host   string
	Addrs  []netip.Addr
	Reason policies.Reason
}

func (e *DenyError) Error() string {
	return fmt.Sprintf("dial %s: refused (%s): %v", e.Host, e.Reason, e.Addrs)
}

// dialer is the one way out of the proxy: resolve (or take a --resolve pin),
// check every address with the SSRF guard, and dial only a checked one.
type dialer struct {
	policy   *policies.Policy
	pins     map[string][]netip.Addr
	resolver Resolver
	timeout  time.Duration
	// dialAddr connects to one checked address; a field so tests can watch
	// exactly which addresses are dialled.
	dialAddr func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
}

func newDialer(policy *policies.Policy, pins map[string][]netip.Addr, r Resolver, timeout time.Duration) *dialer {
	if r == nil {
		r = net.DefaultResolver
	}
	d := &dialer{policy: policy, pins: pins, resolver: r, timeout: timeout}
	nd := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	d.dialAddr = func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
		return nd.DialContext(ctx, "tcp", addr.String())
	}
	return d
}

// lookup returns the addresses for host: the IP itself, a pin, or DNS.
func (d *dialer) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	// Every IP literal form ("2130706433", "0x7f.1", "[::ffff:127.0.0.1]")
	// is the address it denotes; none may reach a resolver as a name.
	if canon, ok := policies.CanonicalHost(host); ok {
		host = canon
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	if pinned, ok := d.pins[strings.ToLower(host)]; ok {
		return pinned, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	addrs, err := d.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	return addrs, nil
}

// dial resolves host, keeps the addresses the guard allows for decision dec,
// and dials them in order until one answers. The returned conn's RemoteAddr
// is the address actually dialled.
func (d *dialer) dial(ctx context.Context, dec policies.Decision, host string, port int) (net.Conn, error) {
	addrs, err := d.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	checked := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if d.policy.AddrAllowed(dec, a) {
			checked = append(checked, a.Unmap())
		}
	}
	if len(checked) == 0 {
		return nil, &DenyError{Host: host, Addrs: addrs, Reason: policies.ReasonPrivateAddress}
	}
	var firstErr error
	for _, a := range checked {
		c, err := d.dialAddr(ctx, netip.AddrPortFrom(a, uint16(port)))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dial %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), firstErr)
}
