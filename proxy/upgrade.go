package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// serveForwardUpgrade takes a forward-proxy request that asks for an
// Upgrade ("GET http://h/p" with "Connection: Upgrade"): goproxy cannot
// switch protocols safely, so the request goes through our relay, whose
// 101 switch is exact. The client connection closes after a response that
// is not a 101: it has been taken from net/http.
func (p *Proxy) serveForwardUpgrade(w http.ResponseWriter, r *http.Request) {
	conn := connID(r.Context())
	t, err := urlTarget(r.URL)
	if err != nil {
		d := newDenial(policies.ReasonBadRequest, r.Method, r.URL.Hostname(), 0, "")
		p.emitRequest(conn, audit.ProtoHTTP, r.Method, target{Host: r.URL.Hostname()}, r.URL.Path,
			denyDecision(policies.ReasonBadRequest), d.Status, "")
		d.serve(w)
		return
	}
	path := requestPath(r.URL)
	upg := upgradeType(r.Header)
	dec := p.decide(policies.Request{Host: t.Host, Port: t.Port, Method: r.Method, Path: path, Upgrade: upg})
	refuse := func(dec policies.Decision) {
		d := newDenial(dec.Reason, r.Method, t.Host, t.Port, path)
		p.cfg.Audit.Emit(audit.Event{
			Event: audit.EventRequest, Conn: conn, Decision: audit.DecisionDeny,
			Reason: string(dec.Reason), Rule: dec.Rule, Proto: audit.ProtoHTTP,
			Method: r.Method, Host: t.Host, Port: t.Port, Path: path, Upgrade: upg, Status: d.Status,
		})
		w.Header().Set("Connection", "close")
		d.serve(w)
	}
	if dec.Action != policies.Allow {
		refuse(dec)
		return
	}
	up, err := p.dialer.dial(r.Context(), dec, t.Host, t.Port)
	if err != nil {
		var deny *DenyError
		if errors.As(err, &deny) {
			refuse(denyDecision(deny.Reason))
			return
		}
		p.emitRequest(conn, audit.ProtoHTTP, r.Method, t, path, dec, http.StatusBadGateway, "")
		w.Header().Set("Connection", "close")
		upstreamReply(err).serve(w)
		return
	}
	proto, defPort := audit.ProtoHTTP, 80
	if scheme := strings.ToLower(r.URL.Scheme); scheme == "https" || scheme == "wss" {
		// The client asked the proxy to speak TLS for it: never send the
		// request in clear.
		tc := tls.Client(up, p.upstreamTLS(t.Host))
		ctx, cancel := context.WithTimeout(r.Context(), p.limits.TLSTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			up.Close()
			p.emitRequest(conn, audit.ProtoHTTPS, r.Method, t, path, dec, http.StatusBadGateway, "")
			w.Header().Set("Connection", "close")
			upstreamReply(err).serve(w)
			return
		}
		up, proto, defPort = tc, audit.ProtoHTTPS, 443
	}
	// The handler returns before the session ends: keep the values, not the cancellation.
	out := r.Clone(context.WithoutCancel(r.Context()))
	if out.Body, err = bufferBody(r); err != nil {
		up.Close()
		refuse(denyDecision(policies.ReasonBadRequest))
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !p.track(client, up) {
		client.Close()
		up.Close()
		return
	}
	// As for CONNECT: return, so net/http lets go of the connection.
	s := &session{id: conn, proto: proto, target: t, defPort: defPort, pin: true, last: true, client: client,
		clientR: brw.Reader, up: newUpstreamConn(up)}
	go p.serveUpgradeSession(s, out, dec)
}

// serveUpgradeSession relays the one upgrade request of s and, after a
// 101, its pipe.
func (p *Proxy) serveUpgradeSession(s *session, out *http.Request, dec policies.Decision) {
	defer p.untrack(s.client, s.up.conn)
	defer s.client.Close()
	defer s.up.conn.Close()
	_ = s.client.SetDeadline(time.Time{})
	p.relayAllowed(s, out, dec)
	if s.piped != nil {
		p.emitClose(s.id, s.proto, s.target, *s.piped)
	}
}

// maxUpgradeBody bounds the body of an upgrade request, which is read
// before the connection is taken from net/http (the body cannot be read
// after). Real upgrade requests have none.
const maxUpgradeBody = 1 << 20

func bufferBody(r *http.Request) (io.ReadCloser, error) {
	if r.ContentLength == 0 {
		return http.NoBody, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxUpgradeBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxUpgradeBody {
		return nil, errors.New("upgrade request body too large")
	}
	r.ContentLength = int64(len(b))
	return io.NopCloser(bytes.NewReader(b)), nil
}
