// Package proxy is osandbox's egress proxy: it serves the listeners it is
// handed, decides every connection and request with a policies.Policy,
// dials only addresses the SSRF guard checked, and records each decision in
// the audit log.
//
// Paths: plain forward-proxy HTTP goes through goproxy; CONNECT (blind or
// inspected) and requests carrying Upgrade go through a front handler of our
// own, which keeps the client bytes net/http buffered and does the 101
// switch (see relay.go). The package knows nothing about namespaces.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
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
	IdleTunnelTimeout time.Duration // tunnel or upgraded connection with no data either way
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
	tr     *http.Transport
	gp     *goproxy.ProxyHttpServer
	srv    *http.Server

	mu     sync.Mutex
	closed bool
	// hijacked are connections net/http no longer tracks (tunnels, upgrades):
	// Close closes them, and wg waits for their goroutines.
	hijacked map[net.Conn]struct{}
	wg       sync.WaitGroup
	// listeners and dnsServers are served outside net/http; Close stops them.
	listeners  []net.Listener
	dnsServers []*dns.Server

	// active counts client connections against Limits.MaxConns; limited
	// holds those that left net/http (hijacked or captured), released by
	// untrack.
	active  atomic.Int64
	limited map[net.Conn]struct{}

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
	p := &Proxy{cfg: cfg, limits: cfg.Limits.withDefaults(), log: log, hijacked: map[net.Conn]struct{}{},
		limited: map[net.Conn]struct{}{}, names: newNameMap()}
	p.dialer = newDialer(cfg.Policy, cfg.Pins, cfg.Resolver, p.limits.DialTimeout)
	// RootCAs nil makes crypto/tls load the system roots on first use, so a
	// run that never verifies an upstream does not pay for reading them.
	roots := cfg.UpstreamCAs
	p.tr = &http.Transport{
		Proxy:                  nil, // never chain through the proxy variables of our own environment
		DialContext:            p.dialer.dialContext,
		TLSClientConfig:        &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}},
		TLSHandshakeTimeout:    p.limits.TLSTimeout,
		ResponseHeaderTimeout:  p.limits.ResponseTimeout,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConnsPerHost:    64,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
	}
	p.gp = p.newGoproxy()
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.limits.HeaderTimeout,
		IdleTimeout:       p.limits.IdleClientTimeout,
		MaxHeaderBytes:    p.limits.MaxHeaderBytes,
		ConnContext:       p.connContext,
		ConnState:         p.connState,
		ErrorLog:          newStdLogger(log),
	}
	return p, nil
}

// connKey carries the audit connection id of a client connection.
type connKey struct{}

func (p *Proxy) connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, p.cfg.Audit.NextConn())
}

func connID(ctx context.Context) uint64 {
	id, _ := ctx.Value(connKey{}).(uint64)
	return id
}

// connState enforces Limits.MaxConns on the proxy listener: a connection
// past the limit is closed before a byte is read.
func (p *Proxy) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		if !p.admit() {
			c.Close()
		}
	case http.StateClosed:
		p.active.Add(-1)
	case http.StateHijacked:
		p.mu.Lock()
		p.limited[c] = struct{}{}
		p.mu.Unlock()
	}
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

// Serve accepts connections on ln until Close. It returns nil after Close.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the listeners, closes every client and upstream connection,
// and waits for the goroutines that served them.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for _, ln := range p.listeners {
		ln.Close()
	}
	for _, srv := range p.dnsServers {
		_ = srv.Shutdown()
	}
	for c := range p.hijacked {
		c.Close()
	}
	p.mu.Unlock()
	err := p.srv.Close()
	p.wg.Wait()
	p.tr.CloseIdleConnections()
	return err
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// addListener registers a listener served outside net/http; false when
// the proxy is closing (the listener is then closed).
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

// track registers conns that net/http no longer owns. It returns false when
// the proxy is closing; the caller must then close them itself.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range conns {
		p.hijacked[c] = struct{}{}
	}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	for _, c := range conns {
		delete(p.hijacked, c)
		if _, ok := p.limited[c]; ok {
			delete(p.limited, c)
			p.active.Add(-1)
		}
	}
	p.mu.Unlock()
	p.wg.Done()
}

// ServeHTTP is the front handler: CONNECT and upgrades are ours, the rest
// is goproxy's forward path.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Close waits for handlers in flight, so that their audit events are
	// written before it returns.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		w.Header().Set("Connection", "close")
		http.Error(w, "osandbox: shutting down", http.StatusServiceUnavailable)
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	switch {
	case r.Method == http.MethodConnect:
		p.serveConnect(w, r)
	case r.URL.IsAbs() && isUpgradeRequest(r.Header):
		p.serveForwardUpgrade(w, r)
	default:
		p.gp.ServeHTTP(w, r)
	}
}
