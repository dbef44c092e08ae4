package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// session is a client connection whose requests all go to one target over
// one upstream connection: an inspected CONNECT tunnel (later also TLS and
// captured connections), or a forward-proxy upgrade.
type session struct {
	id      uint64
	proto   string // audit proto of the requests: http or https
	target  target
	defPort int // the scheme's default port, for Host headers
	client  net.Conn
	clientR *bufio.Reader
	up      *upstreamConn
	// piped is what the raw pipe moved after a switch; nil before one.
	piped *pipeResult
}

// serveRequests is the request loop of an inspected connection: read a
// request, pin its Host to the target, decide, relay, act on the outcome.
func (p *Proxy) serveRequests(s *session) {
	for {
		req, ok := p.readRequest(s)
		if !ok {
			return
		}
		if !p.pinHost(s, req) {
			return
		}
		if !p.exchange(s, req) {
			return
		}
	}
}

// readRequest reads the next request head within the limits: idle wait,
// head timeout and head size. It answers and audits a bad head itself.
func (p *Proxy) readRequest(s *session) (*http.Request, bool) {
	_ = s.client.SetReadDeadline(time.Now().Add(p.limits.IdleClientTimeout))
	if _, err := s.clientR.Peek(1); err != nil {
		return nil, false // the client closed or idled out between requests
	}
	_ = s.client.SetReadDeadline(time.Now().Add(p.limits.HeaderTimeout))
	defer s.client.SetReadDeadline(time.Time{})
	if err := scanHead(s.clientR, p.limits.MaxHeaderBytes); err != nil {
		if errors.Is(err, errHeadTooLarge) {
			p.refuse(s, nil, policies.ReasonHeaderTooLarge)
		}
		return nil, false
	}
	req, err := http.ReadRequest(s.clientR)
	if err != nil {
		p.refuse(s, nil, policies.ReasonBadRequest)
		return nil, false
	}
	return req, true
}

var errHeadTooLarge = errors.New("request head too large")

// scanHead waits until r holds a whole request head, or fails once max
// bytes have come without one. r's buffer must be larger than max.
func scanHead(r *bufio.Reader, limit int) error {
	from, want := 0, max(r.Buffered(), 1)
	for {
		b, err := r.Peek(min(want, limit))
		if bytes.Contains(b[from:], []byte("\r\n\r\n")) {
			return nil
		}
		if len(b) >= limit {
			return errHeadTooLarge
		}
		if err != nil {
			return err
		}
		from = max(len(b)-3, 0)
		want = max(r.Buffered(), len(b)+1)
	}
}

// pinHost refuses a request whose Host (or absolute URI) names another
// host than the connection's target: the upstream never sees the other
// name.
func (p *Proxy) pinHost(s *session, req *http.Request) bool {
	authority := req.Host
	if req.URL.IsAbs() {
		authority = req.URL.Host
	}
	if authority == "" {
		return true // HTTP/1.0 without Host: the target is implied
	}
	t, err := parseAuthority(authority, s.defPort)
	if err == nil && t == s.target {
		return true
	}
	p.refuse(s, req, policies.ReasonHostMismatch)
	return false
}

// refuse answers req (nil for an unreadable head) with a denial, audits
// it, and tells the client the connection closes.
func (p *Proxy) refuse(s *session, req *http.Request, reason policies.Reason) {
	method, path, upg := "", "", ""
	if req != nil {
		method, path, upg = req.Method, requestPath(req.URL), upgradeType(req.Header)
	}
	d := newDenial(reason, method, s.target.Host, s.target.Port, path)
	p.emitExchange(s, method, path, upg, denyDecision(reason), audit.DecisionDeny, d.Status)
	_ = d.write(s.client)
}

// exchange decides one request, relays it and acts on the outcome. It
// returns true when the connection may carry another request.
func (p *Proxy) exchange(s *session, req *http.Request) bool {
	path := requestPath(req.URL)
	upg := upgradeType(req.Header)
	dec := p.decide(policies.Request{Host: s.target.Host, Port: s.target.Port, Method: req.Method, Path: path, Upgrade: upg})
	if dec.Action != policies.Allow {
		p.refuse(s, req, dec.Reason)
		return false
	}
	prepareOutgoing(req, s, upg)
	res := p.relay(req, s.up, s.client, upg)
	switch {
	case res.Refused != "":
		p.emitExchange(s, req.Method, path, upg, denyDecision(res.Refused), audit.DecisionDeny, 0)
		return false
	case res.Err != nil && res.Status == 0:
		p.log.WithError(res.Err).Debugf("%s %s%s", req.Method, s.target, path)
		p.emitExchange(s, req.Method, path, upg, dec, audit.DecisionAllow, http.StatusBadGateway)
		serveUpstreamErrorRaw(s.client, res.Err)
		return false
	}
	if res.Outcome.Kind != Upgraded {
		p.emitExchange(s, req.Method, path, upg, dec, audit.DecisionAllow, res.Status)
		return res.Outcome.Kind == Reusable
	}
	p.emitExchange(s, req.Method, path, upg, dec, audit.DecisionAllowUpgrade, res.Status)
	overflow := int64(len(res.Outcome.Overflow) + s.clientR.Buffered())
	p.cfg.Audit.Emit(audit.Event{
		Time: time.Now(), Event: audit.EventUpgrade, Conn: s.id,
		Decision: audit.DecisionAllowUpgrade, Reason: string(dec.Reason), Rule: dec.Rule,
		Proto: s.proto, Method: req.Method, Host: s.target.Host, Port: s.target.Port, Path: path,
		Upgrade: upg, Status: res.Status, Dst: s.up.conn.RemoteAddr().String(), OverflowBytes: overflow,
	})
	pp := &pipe{client: s.client, upstream: s.up.conn, fromClient: s.clientR, fromUpstream: s.up.r,
		idle: p.limits.IdleTunnelTimeout}
	piped := pp.run()
	s.piped = &piped
	return false
}

// prepareOutgoing turns a client request into the one the upstream gets:
// origin-form, Host pinned to the target, hop-by-hop headers removed (as
// httputil.ReverseProxy does), and the Upgrade the client asked for kept.
func prepareOutgoing(req *http.Request, s *session, upg string) {
	rawUpgrade := req.Header.Get("Upgrade")
	req.URL.Scheme, req.URL.Host = "", ""
	req.RequestURI = ""
	req.Host = hostHeaderFor(s.target, s.defPort)
	removeHopHeaders(req.Header)
	if upg != "" {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", rawUpgrade)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // Request.Write would add Go's own
	}
}

func (p *Proxy) emitExchange(s *session, method, path, upg string, dec policies.Decision, decision string, status int) {
	p.cfg.Audit.Emit(audit.Event{
		Time: time.Now(), Event: audit.EventRequest, Conn: s.id,
		Decision: decision, Reason: string(dec.Reason), Rule: dec.Rule,
		Proto: s.proto, Method: method, Host: s.target.Host, Port: s.target.Port, Path: path,
		Upgrade: upg, Status: status, Dst: s.up.conn.RemoteAddr().String(),
	})
}

func serveUpstreamErrorRaw(w io.Writer, err error) {
	body := upstreamErrorBody(err)
	resp := &http.Response{StatusCode: http.StatusBadGateway, Header: http.Header{
		"Content-Type":   {"application/json"},
		"Content-Length": {strconv.Itoa(len(body))},
	}}
	if writeHead(w, resp, true) == nil {
		_, _ = w.Write(body)
	}
}

// newSessionReader gives a hijacked client connection a reader large
// enough to hold a whole request head, starting with the bytes net/http had
// already buffered.
func newSessionReader(c net.Conn, buffered *bufio.Reader, maxHead int) *bufio.Reader {
	var src io.Reader = c
	if n := buffered.Buffered(); n > 0 {
		b, _ := buffered.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), c)
	}
	return bufio.NewReaderSize(src, maxHead+4<<10)
}
