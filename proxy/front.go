package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// firstReadSize is the client reader's size until a head needs more
// (readRequest then moves to one that holds Limits.MaxHeaderBytes): most
// connections are a CONNECT or a few small requests.
const firstReadSize = 4 << 10

// serveClient serves one connection to the proxy listener with the
// session loop's head reader: a CONNECT ends the loop with a tunnel; an
// absolute-URI request is decided and relayed (upgrades too), and the
// upstream connection is kept for the next request to the same target;
// anything else is refused. Heads that net/http would refuse on its own
// are refused here, with the JSON denial and an audit event.
func (p *Proxy) serveClient(c net.Conn) {
	s := &session{id: p.cfg.Audit.NextConn(), forward: true, client: c,
		clientR: bufio.NewReaderSize(c, firstReadSize)}
	defer p.dropUpstream(s)
	for {
		// Until a request names its target, a refusal names none.
		s.target, s.proto, s.defPort = target{}, audit.ProtoHTTP, 80
		req, ok := p.readRequest(s)
		if !ok {
			break
		}
		if req.Method == http.MethodConnect {
			p.dropUpstream(s) // kept for earlier forward requests; the tunnel needs its own
			p.serveConnect(s, req)
			break
		}
		if !p.forward(s, req) {
			break
		}
	}
	if s.refused {
		lingerClose(c)
	}
}

// forward decides and relays one forward-proxy request. The absolute URI
// names the target and its authority replaces the Host header (DESIGN
// 1.2); an https:// or wss:// URI is sent over TLS, never in clear. It
// returns true when the client connection may carry another request.
func (p *Proxy) forward(s *session, req *http.Request) bool {
	if !req.URL.IsAbs() {
		s.target, _ = parseAuthority(req.Host, 80) // for the audit; the zero target if none
		p.refuseHint(s, req, denyDecision(policies.ReasonBadRequest),
			"this is a proxy: send absolute-URI requests (GET http://host/path) or CONNECT")
		return false
	}
	t, err := urlTarget(req.URL)
	secure := isSecureScheme(req.URL.Scheme)
	if s.up != nil && (err != nil || t != s.upTarget || secure != s.upSecure || !stillIdle(s.up, s.upUsed)) {
		p.dropUpstream(s)
	}
	if err != nil {
		s.target = target{Host: req.URL.Hostname()}
		if secure {
			s.proto = audit.ProtoHTTPS
		}
		p.refuse(s, req, denyDecision(policies.ReasonBadRequest))
		return false
	}
	s.target, s.proto, s.defPort = t, audit.ProtoHTTP, 80
	if secure {
		s.proto, s.defPort = audit.ProtoHTTPS, 443
	}
	path := requestPath(req.URL)
	dec := p.decide(policies.Request{Host: t.Host, Port: t.Port, Method: req.Method, Path: path,
		Upgrade: upgradeType(req.Header)})
	if dec.Action != policies.Allow {
		// The connection closes after a denial: let the upstream go first,
		// so the audit event names no address that was not used.
		p.dropUpstream(s)
		p.refuse(s, req, dec)
		return false
	}
	if s.up != nil && !p.addrAllowed(dec, s.up.conn) {
		// Kept for a rule that named its address; this request's rule
		// must pass the guard on its own dial.
		p.dropUpstream(s)
	}
	s.reused = s.up != nil
	if !s.reused && !p.dialUpstream(s, req, dec) {
		return false
	}
	more := p.relayAllowed(s, req, dec)
	s.upUsed, s.reused = time.Now(), false
	if s.piped != nil {
		p.emitClose(s.id, s.proto, s.target, *s.piped)
	}
	return more
}

func isSecureScheme(scheme string) bool {
	return strings.EqualFold(scheme, "https") || strings.EqualFold(scheme, "wss")
}

// dialUpstream connects s to its target through the SSRF guard, with TLS
// for https; on failure it answers the client (denial or 502) itself.
func (p *Proxy) dialUpstream(s *session, req *http.Request, dec policies.Decision) bool {
	raw, err := p.dialer.dial(p.ctx, dec, s.target.Host, s.target.Port)
	up := raw
	if err == nil {
		// Close closes the socket itself: closing a TLS conn would first
		// try to send close_notify to an upstream that may not read.
		if !p.hold(raw) {
			raw.Close()
			return false
		}
		if s.proto == audit.ProtoHTTPS {
			if up, err = p.handshake(raw, s.target.Host); err != nil {
				p.release(raw)
			}
		}
	}
	if err != nil {
		var deny *DenyError
		if errors.As(err, &deny) {
			p.refuse(s, req, denyDecision(deny.Reason))
			return false
		}
		p.log.WithError(err).Debugf("%s %s://%s%s", req.Method, s.proto, s.target, requestPath(req.URL))
		p.emitExchange(s, req.Method, requestPath(req.URL), upgradeType(req.Header), dec, audit.DecisionAllow, http.StatusBadGateway)
		p.sendFinal(s, upstreamReply(err)) // the request's body, if any, was not read
		return false
	}
	s.up, s.upRaw, s.dst = newUpstreamConn(up), raw, ""
	s.upTarget, s.upSecure = s.target, s.proto == audit.ProtoHTTPS
	return true
}

// handshake runs TLS as a client on up, verifying host's certificate; up
// is closed when it fails.
func (p *Proxy) handshake(up net.Conn, host string) (net.Conn, error) {
	tc := tls.Client(up, p.upstreamTLS(host))
	ctx, cancel := context.WithTimeout(p.ctx, p.limits.TLSTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		up.Close()
		return nil, err
	}
	return tc, nil
}

// dropUpstream closes the upstream connection of s, if it has one.
func (p *Proxy) dropUpstream(s *session) {
	if s.up == nil {
		return
	}
	p.release(s.upRaw)
	s.up.conn.Close()
	s.up, s.upRaw, s.dst = nil, nil, ""
}

// closedUnderUs reports whether err says the upstream closed or reset the
// connection (not that it was slow: a timeout is no reason to ask again).
func closedUnderUs(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// replayable reports whether req may be sent again on a new connection
// when a kept one failed before any answer: no body, and a method that
// means the same sent twice (as http.Transport decides).
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// recentUse is how long after its last response an upstream connection
// is taken as still open without a look: servers close idle connections
// after seconds, not milliseconds, and a busy client saves a syscall.
const recentUse = 100 * time.Millisecond

// stillIdle reports whether a kept upstream connection, last used at
// used, can carry another request: the upstream has neither closed it nor
// sent anything since the last response (a socket-level peek, so TLS
// records stay unread).
func stillIdle(up *upstreamConn, used time.Time) bool {
	if up.r.Buffered() > 0 {
		return false
	}
	if time.Since(used) < recentUse {
		return true
	}
	c := up.conn
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn()
	}
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	idle := false
	var b [1]byte
	if err := raw.Read(func(fd uintptr) bool {
		_, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		idle = rerr == unix.EAGAIN
		return true
	}); err != nil {
		return false
	}
	return idle
}

// lingerTime and lingerBytes bound lingerClose.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// lingerClose ends a connection whose client may still be sending (the
// body of a request that was refused): our side is shut first and what
// arrives is read and dropped for a moment, so that the kernel does not
// answer unread bytes with a reset that destroys the reply before the
// client has read it (net/http's closeWriteAndWait does the same).
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}
