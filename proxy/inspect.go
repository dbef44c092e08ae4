package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// tlsHandshakeRecord is the first byte of a TLS ClientHello.
const tlsHandshakeRecord = 0x16

// serveInspected runs the request loop inside an accepted CONNECT whose
// target has http rules. A tunnel that starts with a TLS handshake is
// intercepted with a leaf signed by the run's CA; otherwise the requests
// are plain HTTP. Either way every request is decided on its own.
// pin says whether requests must name t (false only for a captured
// connection to an address no name was handed out for); proto is the
// audit proto of the closing event (connect, or the captured protocol).
func (p *Proxy) serveInspected(id uint64, client net.Conn, buffered *bufio.Reader, up net.Conn, t target, pin bool, proto string) {
	start := time.Now()
	counted := &countingConn{Conn: client}
	// What was read before we took the conn counts too (a sniffed head).
	counted.read.Add(int64(buffered.Buffered()))
	defer func() {
		counted.Close()
		up.Close()
		p.emitClose(id, proto, t, pipeResult{Up: counted.read.Load(), Down: counted.written.Load(), Duration: time.Since(start)})
	}()
	br := newSessionReader(counted, buffered, p.limits.MaxHeaderBytes)
	_ = client.SetReadDeadline(time.Now().Add(p.limits.HeaderTimeout))
	first, err := br.Peek(1)
	_ = client.SetReadDeadline(time.Time{})
	if err != nil {
		return
	}
	s := &session{id: id, proto: audit.ProtoHTTP, target: t, defPort: 80, pin: pin,
		client: counted, clientR: br, up: newUpstreamConn(up)}
	if first[0] != tlsHandshakeRecord {
		p.serveRequests(s)
		return
	}
	tc, uc, err := p.intercept(&bufferedConn{Conn: counted, r: br}, up, t)
	if err != nil {
		p.log.WithError(err).Debugf("intercept %s", t)
		return
	}
	s.proto, s.defPort = audit.ProtoHTTPS, 443
	s.client, s.clientR = tc, bufio.NewReaderSize(tc, p.limits.MaxHeaderBytes+4<<10)
	s.up = newUpstreamConn(uc)
	p.serveRequests(s)
}

// intercept completes TLS with the client, as t, and with the upstream,
// verifying its certificate. ALPN is http/1.1 on both sides.
func (p *Proxy) intercept(client, up net.Conn, t target) (*tls.Conn, net.Conn, error) {
	if p.cfg.CA == nil {
		return nil, nil, errors.New("TLS interception needs a CA; none configured")
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.limits.TLSTimeout)
	defer cancel()
	tc := tls.Server(client, &tls.Config{
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.cfg.CA.leaf(t.Host)
		},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, err
	}
	uc, err := p.handshake(up, t.Host)
	if err != nil {
		_ = upstreamReply(err).write(tc)
		_ = tc.Close()
		return nil, nil, err
	}
	return tc, uc, nil
}

// upstreamTLS is the client side of TLS to an upstream: verified against
// the system roots plus --upstream-ca, HTTP/1.1 only.
func (p *Proxy) upstreamTLS(host string) *tls.Config {
	cfg := p.upstreamTLSBase.Clone()
	cfg.ServerName = host
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// bufferedConn reads through r, which holds bytes already read from Conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *bufferedConn) NetConn() net.Conn          { return c.Conn }
