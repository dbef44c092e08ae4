package proxy

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// serveConnect decides a CONNECT read by the client loop of s, dials the
// checked address before answering, and then tunnels: blind, or through
// the inspected request loop when the target has http rules.
func (p *Proxy) serveConnect(s *session, req *http.Request) {
	t, err := parseAuthority(req.URL.Host, 0)
	if err != nil || req.URL.Host == "" {
		p.refuseConnect(s, target{Host: req.Host}, denyDecision(policies.ReasonBadRequest))
		return
	}
	dec := p.decide(policies.Request{Host: t.Host, Port: t.Port})
	if dec.Action != policies.Allow {
		p.refuseConnect(s, t, dec)
		return
	}
	up, err := p.dialer.dial(p.ctx, dec, t.Host, t.Port)
	if err != nil {
		var deny *DenyError
		if errors.As(err, &deny) {
			p.refuseConnect(s, t, denyDecision(deny.Reason))
			return
		}
		p.log.WithError(err).Debugf("CONNECT %s", t)
		p.emitConnect(s.id, t, dec, http.StatusBadGateway, "")
		p.sendFinal(s, upstreamReply(err))
		return
	}
	if !p.hold(up) {
		up.Close()
		return
	}
	defer p.release(up)
	// The tunnel keeps only the bytes that came after the CONNECT head,
	// not the reader that holds them.
	br := s.clientR
	s.clientR = nil
	p.serveTunnel(s.id, s.client, br, up, t, dec)
}

// serveTunnel answers an accepted CONNECT and runs its tunnel.
func (p *Proxy) serveTunnel(conn uint64, client net.Conn, br *bufio.Reader, up net.Conn, t target, dec policies.Decision) {
	dst := up.RemoteAddr().String()
	p.emitConnect(conn, t, dec, http.StatusOK, dst)
	if err := p.writeWithin(client, func() error {
		_, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		return err
	}); err != nil {
		client.Close()
		up.Close()
		p.emitClose(conn, audit.ProtoConnect, t, pipeResult{})
		return
	}
	if dec.Inspect {
		p.serveInspected(conn, client, br, up, t, true, audit.ProtoConnect)
		return
	}
	pp := &pipe{client: client, upstream: up, fromClient: pending(br), idle: p.limits.IdleTunnelTimeout}
	br = nil
	p.emitClose(conn, audit.ProtoConnect, t, pp.run())
}

// refuseConnect answers a CONNECT with its denial before any tunnel
// exists; the client connection then closes.
func (p *Proxy) refuseConnect(s *session, t target, dec policies.Decision) {
	d := newDenial(dec.Reason, http.MethodConnect, t.Host, t.Port, "")
	p.emitConnect(s.id, t, dec, d.Status, "")
	p.sendFinal(s, d.reply())
}

func (p *Proxy) emitConnect(conn uint64, t target, dec policies.Decision, status int, dst string) {
	p.cfg.Audit.Emit(audit.Event{
		Time: time.Now(), Event: audit.EventConnect, Conn: conn,
		Decision: decisionString(dec), Reason: string(dec.Reason), Rule: dec.Rule,
		Proto: audit.ProtoConnect, Method: http.MethodConnect, Host: t.Host, Port: t.Port,
		Status: status, Dst: dst,
	})
}

func (p *Proxy) emitClose(conn uint64, proto string, t target, res pipeResult) {
	p.cfg.Audit.Emit(audit.Event{
		Time: time.Now(), Event: audit.EventClose, Conn: conn, Proto: proto,
		Host: t.Host, Port: t.Port,
		BytesUp: res.Up, BytesDown: res.Down, Duration: res.Duration,
	})
}
