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

// serveConnect decides a CONNECT on host and port, dials the checked
// address before answering, and then tunnels.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request) {
	conn := connID(r.Context())
	t, err := parseAuthority(r.Host, 0)
	if err != nil {
		d := newDenial(policies.ReasonBadRequest, r.Method, r.Host, 0, "")
		p.emitConnect(conn, target{Host: r.Host}, denyDecision(policies.ReasonBadRequest), d.Status, "")
		w.Header().Set("Connection", "close")
		d.serve(w)
		return
	}
	dec := p.decide(policies.Request{Host: t.Host, Port: t.Port})
	if dec.Action != policies.Allow {
		p.refuseConnect(w, conn, t, dec)
		return
	}
	up, err := p.dialer.dial(r.Context(), dec, t.Host, t.Port)
	if err != nil {
		var deny *DenyError
		if errors.As(err, &deny) {
			p.refuseConnect(w, conn, t, denyDecision(deny.Reason))
			return
		}
		p.log.WithError(err).Debugf("CONNECT %s", t)
		p.emitConnect(conn, t, dec, http.StatusBadGateway, "")
		w.Header().Set("Connection", "close")
		upstreamReply(err).serve(w)
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		p.log.WithError(err).Warn("CONNECT: cannot take over the client connection")
		return
	}
	if !p.track(client, up) {
		client.Close()
		up.Close()
		return
	}
	// The handler returns now, so that net/http lets go of its state for
	// this connection (reader, writer, the handler's stack) while the
	// tunnel lasts.
	go p.serveTunnel(conn, client, brw.Reader, up, t, dec)
}

// serveTunnel answers an accepted CONNECT and runs its tunnel.
func (p *Proxy) serveTunnel(conn uint64, client net.Conn, br *bufio.Reader, up net.Conn, t target, dec policies.Decision) {
	defer p.untrack(client, up)
	// A hijacked conn keeps the deadlines the server set for reading heads.
	_ = client.SetDeadline(time.Time{})
	dst := up.RemoteAddr().String()
	p.emitConnect(conn, t, dec, http.StatusOK, dst)
	if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
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

func (p *Proxy) refuseConnect(w http.ResponseWriter, conn uint64, t target, dec policies.Decision) {
	d := newDenial(dec.Reason, http.MethodConnect, t.Host, t.Port, "")
	p.emitConnect(conn, t, dec, d.Status, "")
	w.Header().Set("Connection", "close")
	d.serve(w)
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
