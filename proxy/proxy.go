// Package proxy is osandbox's egress proxy: it serves the listeners it is
// handed, decides every connection and request with a policies.Policy,
// dials only addresses the SSRF guard checked, and records each decision in
// the audit log.
//
// Every client connection is served by one request loop of our own
// (session.go): it reads each request head within the limits, refuses what
// an upstream could frame differently, decides, and relays with the
// 101-aware relay (relay.go). CONNECT tunnels, inspected CONNECTs (plain or
// TLS intercepted with leaves from goproxy's signer, ca.go), absolute-URI
// forward requests and captured connections all share it. The package knows
// nothing about namespaces.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/sirupsen/logrus"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// Limits are the proxy's timeouts and sizes. A zero field takes the default
// of DESIGN 2.6, given in DefaultLimits.
type Limits struct {
	MaxHeaderBytes    int
	MaxConns          int           // client connections open at once, all listeners; more are closed at once
	HeaderTimeout     time.Duration // request head must arrive within this
	DialTimeout       time.Duration
	TLSTimeout        time.Duration
	ResponseTimeout   time.Duration // upstream response head
	IdleClientTimeout time.Duration // keep-alive client connection
	IdleTunnelTimeout time.Duration // tunnel or upgraded connection with no data either way; a response body that stops moving
}

// DefaultLimits are DESIGN 2.6's defaults.
var DefaultLimits = Limits{
	MaxHeaderBytes:    64 << 10,
	MaxConns:          8192, // DESIGN 2.6 says 4096; issue 7 asks for 5,000 tunnels at once
	HeaderTimeout:     30 * time.Second,
	DialTimeout:       10 * time.Second,
	TLSTimeout:        10 * time.Second,
	ResponseTimeout:   30 * time.Second,
	IdleClientTimeout: 2 * time.Minute,
	IdleTunnelTimeout: 10 * time.Minute,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxHeaderBytes > 0 {
		d.MaxHeaderBytes = l.MaxHeaderBytes
	}
	if l.MaxConns > 0 {
		d.MaxConns = l.MaxConns
	}
	for _, f := range []struct{ dst, src *time.Duration }{
		{&d.HeaderTimeout, &l.HeaderTimeout}, {&d.DialTimeout, &l.DialTimeout},
		{&d.TLSTimeout, &l.TLSTimeout}, {&d.ResponseTimeout, &l.ResponseTimeout},
		{&d.IdleClientTimeout, &l.IdleClientTimeout}, {&d.IdleTunnelTimeout, &l.IdleTunnelTimeout},
	} {
		if *f.src > 0 {
			*f.dst = *f.src
		}
	}
	return d
}

// Config is everything a Proxy needs; it is built once per run.
type Config struct {
	// Policy decides; required.
	Policy *policies.Policy
	// Audit receives every decision; required.
	Audit *audit.Log
	// Log is for osandbox's own diagnostics; nil discards them.
	Log *logrus.Entry
	// Pins are --resolve entries: lower-case name -> addresses.
	Pins map[string][]netip.Addr
	// Resolver looks up names not pinned; nil means net.DefaultResolver.
	Resolver Resolver
	// UpstreamCAs is the pool upstream TLS is verified against; nil means
	// the system roots. (The CLI builds it as the system roots plus
	// --upstream-ca.)
	UpstreamCAs *x509.CertPool
	// CA signs the certificates of intercepted TLS hosts; nil means TLS to a
	// host with http rules is refused (the client's handshake fails).
	CA *CA
	// Learn allows whatever the SSRF guard allows, audited as learn_mode.
	Learn bool
	// Limits; zero fields take DefaultLimits.
	Limits Limits
}

// Proxy serves listeners until Close.
type Proxy struct {
	cfg    Config
	limits Limits
	log    *logrus.Entry
	dialer *dialer
	// upstreamTLS is the base of every TLS client config to an upstream.
	upstreamTLSBase *tls.Config

	// ctx ends with Close, and with it the dials and handshakes in flight.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	// conns are every client and upstream connection open: Close closes
	// them, and wg waits for the goroutines that serve them.
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	// listeners and dnsServers are what Close stops first.
	listeners  []net.Listener
	dnsServers []*dns.Server

	// active counts client connections against Limits.MaxConns.
	active atomic.Int64

	// names maps the DNS stub's synthetic addresses back to names.
	names *nameMap
}

// New builds a proxy; it does not listen.
func New(cfg Config) (*Proxy, error) {
	if cfg.Policy == nil || cfg.Audit == nil {
		return nil, errors.New("proxy: Policy and Audit are required")
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		log = logrus.NewEntry(l)
	}
	p := &Proxy{cfg: cfg, limits: cfg.Limits.withDefaults(), log: log, conns: map[net.Conn]struct{}{},
		names: newNameMap()}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.dialer = newDialer(cfg.Policy, cfg.Pins, cfg.Resolver, p.limits.DialTimeout)
	// RootCAs nil makes crypto/tls load the system roots on first use, so a
	// run that never verifies an upstream does not pay for reading them.
	p.upstreamTLSBase = &tls.Config{RootCAs: cfg.UpstreamCAs, NextProtos: []string{"http/1.1"}}
	return p, nil
}

// admit counts a new client connection; false when over the limit (it
// stays counted until it is released, as a closed one is).
func (p *Proxy) admit() bool {
	if p.active.Add(1) > int64(p.limits.MaxConns) {
		p.log.Warnf("over %d connections: refusing one", p.limits.MaxConns)
		return false
	}
	return true
}

// Serve serves the proxy listener until Close: forward-proxy requests,
// CONNECT and upgrades (session.go). It returns nil after Close.
func (p *Proxy) Serve(ln net.Listener) error {
	return p.serveListener(ln, p.serveClient)
}

// serveListener accepts connections on ln until Close, each served by
// serve in a goroutine of its own and counted against Limits.MaxConns.
func (p *Proxy) serveListener(ln net.Listener, serve func(net.Conn)) error {
	if !p.addListener(ln) {
		return nil
	}
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of fds (EMFILE) or buffers: wait and try again, as
			// net/http does; returning would leave every later client
			// waiting in the backlog.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			p.log.WithError(err).Warnf("accept; trying again in %v", pause)
			select {
			case <-p.ctx.Done():
				return nil
			case <-time.After(pause):
			}
			continue
		}
		pause = 0
		if !p.admit() {
			p.active.Add(-1)
			c.Close()
			continue
		}
		if !p.track(c) {
			p.active.Add(-1)
			c.Close()
			return nil
		}
		go func() {
			defer p.active.Add(-1)
			defer p.untrack(c)
			defer c.Close()
			serve(c)
		}()
	}
}

// Close stops the listeners, closes every client and upstream connection,
// and waits for the goroutines that served them.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cancel()
	for _, ln := range p.listeners {
		ln.Close()
	}
	for _, srv := range p.dnsServers {
		_ = srv.Shutdown()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// addListener registers a listener for Close to stop; false when the proxy
// is closing (the listener is then closed).
func (p *Proxy) addListener(ln net.Listener) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		ln.Close()
		return false
	}
	p.listeners = append(p.listeners, ln)
	return true
}

// track registers a client connection and the goroutine serving it. It
// returns false when the proxy is closing; the caller must then close c.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// hold registers an upstream connection for Close to close; false when the
// proxy is closing (the caller must then close c).
func (p *Proxy) hold(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) release(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
