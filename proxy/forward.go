package proxy

import (
	"context"
	"errors"
	"log"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/sirupsen/logrus"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// forwardState follows one forward-proxy request from goproxy's request
// hook to its response hook.
type forwardState struct {
	conn   uint64
	target target
	path   string
	dec    policies.Decision
	dst    string
}

// newGoproxy configures goproxy for the plain forward path: no proxy
// chaining, our transport and dialer, and our decision hooks.
func (p *Proxy) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Tr = p.tr
	gp.ConnectDial = nil
	gp.KeepAcceptEncoding = true
	gp.Logger = newStdLogger(p.log)
	gp.NonproxyHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "osandbox: this is a proxy; send absolute-URI requests or CONNECT", http.StatusBadRequest)
	})
	gp.OnRequest().DoFunc(p.forwardRequest)
	gp.OnResponse().DoFunc(p.forwardResponse)
	return gp
}

func (p *Proxy) forwardRequest(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	conn := connID(r.Context())
	t, err := urlTarget(r.URL)
	if err != nil {
		d := newDenial(policies.ReasonBadRequest, r.Method, r.URL.Hostname(), 0, "")
		p.emitRequest(conn, audit.ProtoHTTP, r.Method, target{Host: r.URL.Hostname()}, r.URL.Path, denyDecision(policies.ReasonBadRequest), d.Status, "")
		return r, d.response(r)
	}
	path := requestPath(r.URL)
	dec := p.decide(policies.Request{Host: t.Host, Port: t.Port, Method: r.Method, Path: path})
	if dec.Action != policies.Allow {
		d := newDenial(dec.Reason, r.Method, t.Host, t.Port, path)
		p.emitRequest(conn, audit.ProtoHTTP, r.Method, t, path, dec, d.Status, "")
		return r, d.response(r)
	}
	st := &forwardState{conn: conn, target: t, path: path, dec: dec}
	ctx.UserData = st
	// The absolute URI wins: dial the address it denotes and send its
	// authority as Host (RFC 9112 3.2.2).
	r.URL.Host = hostHeaderFor(t, 80)
	r.Host = ""
	removeHopHeaders(r.Header)
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		st.dst = info.Conn.RemoteAddr().String()
	}}
	rctx := context.WithValue(r.Context(), decisionKey{}, dec)
	return r.WithContext(httptrace.WithClientTrace(rctx, trace)), nil
}

func (p *Proxy) forwardResponse(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	st, ok := ctx.UserData.(*forwardState)
	if !ok {
		return resp // a denial we made ourselves, already audited
	}
	r := ctx.Req
	if resp == nil {
		var deny *DenyError
		if errors.As(ctx.Error, &deny) {
			d := newDenial(deny.Reason, r.Method, st.target.Host, st.target.Port, st.path)
			p.emitRequest(st.conn, audit.ProtoHTTP, r.Method, st.target, st.path, denyDecision(deny.Reason), d.Status, "")
			return d.response(r)
		}
		p.log.WithError(ctx.Error).Debugf("forward %s %s", r.Method, st.target)
		p.emitRequest(st.conn, audit.ProtoHTTP, r.Method, st.target, st.path, st.dec, http.StatusBadGateway, st.dst)
		return upstreamReply(ctx.Error).response(r)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The client did not ask to upgrade (those requests never reach
		// goproxy): send it nothing and close both sides.
		resp.Body.Close()
		p.emitRequest(st.conn, audit.ProtoHTTP, r.Method, st.target, st.path,
			denyDecision(policies.ReasonUnsolicitedUpgrade), 0, st.dst)
		panic(http.ErrAbortHandler)
	}
	p.emitRequest(st.conn, audit.ProtoHTTP, r.Method, st.target, st.path, st.dec, resp.StatusCode, st.dst)
	// goproxy passes the upstream's headers on as they are; hop-by-hop ones
	// (and those its Connection names) are this hop's only.
	removeHopHeaders(resp.Header)
	return resp
}

func denyDecision(reason policies.Reason) policies.Decision {
	return policies.Decision{Action: policies.Deny, Reason: reason}
}

// decide asks the policy; in learn mode every decision allows, and the
// SSRF guard still applies at dial time.
func (p *Proxy) decide(req policies.Request) policies.Decision {
	if p.cfg.Learn {
		return policies.Decision{Action: policies.Allow, Reason: policies.ReasonLearnMode}
	}
	return p.cfg.Policy.Decide(req)
}

func (p *Proxy) emitRequest(conn uint64, proto, method string, t target, path string, dec policies.Decision, status int, dst string) {
	p.cfg.Audit.Emit(audit.Event{
		Time: time.Now(), Event: audit.EventRequest, Conn: conn,
		Decision: decisionString(dec), Reason: string(dec.Reason), Rule: dec.Rule,
		Proto: proto, Method: method, Host: t.Host, Port: t.Port, Path: path,
		Status: status, Dst: dst,
	})
}

func decisionString(d policies.Decision) string {
	if d.Action == policies.Allow {
		return audit.DecisionAllow
	}
	return audit.DecisionDeny
}

// newStdLogger routes the log.Logger that net/http and goproxy want into
// our diagnostics at debug level.
func newStdLogger(e *logrus.Entry) *log.Logger {
	return log.New(debugWriter{e}, "", 0)
}

type debugWriter struct{ e *logrus.Entry }

func (w debugWriter) Write(b []byte) (int, error) {
	w.e.Debug(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
