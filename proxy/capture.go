package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// sniffWait is how long a captured connection may stay silent before it is
// taken for a protocol where the server speaks first (SSH banners, SMTP).
const sniffWait = 300 * time.Millisecond

// reasonNotHTTP refuses raw TCP to a host:port whose rules are HTTP rules.
const reasonNotHTTP policies.Reason = "not_http"

// ServeCapture serves connections that the namespace's nftables rules
// redirected to ln (programs that ignore the proxy variables). Each is
// named from its original destination and decided like a CONNECT.
func (p *Proxy) ServeCapture(ln net.Listener) error {
	return p.serveListener(ln, p.serveCaptured)
}

// sniffed is what the first bytes of a captured connection say.
type sniffed struct {
	kind string // audit.ProtoHTTPS for TLS, audit.ProtoHTTP, or audit.ProtoTCP
	sni  string
	// badHello: it started like TLS but no whole ClientHello could be read.
	badHello bool
}

func (p *Proxy) serveCaptured(c net.Conn) {
	id := p.cfg.Audit.NextConn()
	orig, err := originalDst(c)
	if err != nil {
		p.log.WithError(err).Debug("captured connection without an original destination")
		c.Close()
		return
	}
	t := target{Host: orig.Addr().String(), Port: int(orig.Port())}
	name, mapped := p.names.nameOf(orig.Addr())
	if mapped {
		t.Host = name
	}
	br := bufio.NewReaderSize(c, 64<<10)
	sn := sniff(c, br)
	if sn.badHello {
		// Without the SNI there is no telling where the client means to go.
		p.emitCaptured(id, sn.kind, t, denyDecision(policies.ReasonBadRequest), "")
		c.Close()
		return
	}
	if sn.kind == audit.ProtoHTTPS && sn.sni != "" && mapped && !strings.EqualFold(strings.TrimSuffix(sn.sni, "."), name) {
		p.emitCaptured(id, sn.kind, t, denyDecision(policies.ReasonHostMismatch), "")
		c.Close()
		return
	}
	dec := p.decide(policies.Request{Host: t.Host, Port: t.Port})
	if dec.Action == policies.Allow && dec.Inspect && sn.kind == audit.ProtoTCP {
		dec = denyDecision(reasonNotHTTP)
	}
	if dec.Action != policies.Allow {
		p.refuseCaptured(id, c, br, sn, t, dec)
		return
	}
	up, err := p.dialer.dial(p.ctx, dec, t.Host, t.Port)
	if err != nil {
		var deny *DenyError
		if errors.As(err, &deny) {
			p.refuseCaptured(id, c, br, sn, t, denyDecision(deny.Reason))
			return
		}
		p.log.WithError(err).Debugf("captured %s", t)
		p.emitCaptured(id, sn.kind, t, dec, "")
		c.Close()
		return
	}
	p.emitCaptured(id, sn.kind, t, dec, up.RemoteAddr().String())
	if !p.hold(up) {
		up.Close()
		return
	}
	defer p.release(up)
	if dec.Inspect {
		// An address without a name cannot be pinned to one: the Host header
		// it carries is the only name there is.
		p.serveInspected(id, c, br, up, t, mapped, sn.kind)
		return
	}
	pp := &pipe{client: c, upstream: up, fromClient: pending(br), idle: p.limits.IdleTunnelTimeout}
	p.emitClose(id, sn.kind, t, pp.run())
}

// refuseCaptured closes a denied captured connection; plain HTTP gets the
// 403 JSON first, as a proxied request would.
func (p *Proxy) refuseCaptured(id uint64, c net.Conn, br *bufio.Reader, sn sniffed, t target, dec policies.Decision) {
	p.emitCaptured(id, sn.kind, t, dec, "")
	if sn.kind == audit.ProtoHTTP {
		method, path := requestLine(br)
		_ = newDenial(dec.Reason, method, t.Host, t.Port, path).write(c)
	}
	c.Close()
}

// requestLine is the method and normalised path of the request line in
// br, as far as it has arrived, without consuming it.
func requestLine(br *bufio.Reader) (method, path string) {
	b, _ := br.Peek(br.Buffered())
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return "", ""
	}
	return f[0], normalizePath(f[1])
}

func (p *Proxy) emitCaptured(id uint64, proto string, t target, dec policies.Decision, dst string) {
	p.cfg.Audit.Emit(audit.Event{
		Time: time.Now(), Event: audit.EventConnect, Conn: id,
		Decision: decisionString(dec), Reason: string(dec.Reason), Rule: dec.Rule,
		Proto: proto, Host: t.Host, Port: t.Port, Dst: dst,
	})
}

// sniff looks at the first bytes without consuming them: a TLS
// ClientHello (and its SNI), an HTTP request line, or anything else.
func sniff(c net.Conn, br *bufio.Reader) sniffed {
	_ = c.SetReadDeadline(time.Now().Add(sniffWait))
	defer c.SetReadDeadline(time.Time{})
	first, err := br.Peek(1)
	if err != nil {
		return sniffed{kind: audit.ProtoTCP}
	}
	if first[0] == tlsHandshakeRecord {
		sni, ok := clientHelloSNI(br)
		return sniffed{kind: audit.ProtoHTTPS, sni: sni, badHello: !ok}
	}
	b, _ := br.Peek(min(br.Buffered(), 16))
	if looksLikeHTTP(b) {
		return sniffed{kind: audit.ProtoHTTP}
	}
	return sniffed{kind: audit.ProtoTCP}
}

// looksLikeHTTP reports whether b starts with a method token and a space.
func looksLikeHTTP(b []byte) bool {
	i := bytes.IndexByte(b, ' ')
	if i < 3 {
		return false
	}
	for _, c := range b[:i] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// clientHelloSNI parses the server name of the ClientHello at the start of
// br with crypto/tls itself, without consuming anything. The ClientHello may
// span several records (a client can fragment it to hide its SNI from a
// one-record sniffer), so whole records are peeked until the handshake
// message is complete. ok is false when that cannot be done within br's
// buffer or the bytes are not a ClientHello.
func clientHelloSNI(br *bufio.Reader) (sni string, ok bool) {
	var msg []byte // the handshake message so far, across records
	off, need := 0, -1
	for need < 0 || len(msg) < need {
		hdr, err := br.Peek(off + 5)
		if err != nil || hdr[off] != tlsHandshakeRecord {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(hdr[off+3 : off+5]))
		rec, err := br.Peek(off + 5 + n)
		if err != nil {
			return "", false
		}
		msg = append(msg, rec[off+5:]...)
		off += 5 + n
		if need < 0 && len(msg) >= 4 {
			if msg[0] != 1 { // client_hello
				return "", false
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		}
	}
	flight, _ := br.Peek(off)
	stop := errors.New("sniffed")
	srv := tls.Server(readOnlyConn{r: bytes.NewReader(flight)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, ok = h.ServerName, true
			return nil, stop
		},
	})
	_ = srv.Handshake()
	return sni, ok
}

// readOnlyConn feeds bytes to a TLS handshake that is stopped before it
// writes anything.
type readOnlyConn struct {
	net.Conn
	r io.Reader
}

func (c readOnlyConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c readOnlyConn) Write(b []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c readOnlyConn) Close() error                     { return nil }
func (c readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (c readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (c readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
func (c readOnlyConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c readOnlyConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// originalDst is where a redirected connection was going (SO_ORIGINAL_DST).
func originalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var mreq *unix.IPv6Mreq
	var optErr error
	if err := raw.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST returns a sockaddr_in; IPv6Mreq is the 16-byte
		// buffer x/sys offers for it.
		mreq, optErr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if optErr != nil {
		return netip.AddrPort{}, optErr
	}
	b := mreq.Multiaddr
	ip := netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]})
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[2:4])), nil
}
