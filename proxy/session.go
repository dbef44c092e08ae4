package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// session is a client connection and its requests: on the proxy listener
// (front.go) each request names its own target and the upstream connection
// is kept while they name the same one; in an inspected CONNECT tunnel
// (plain or TLS) or a captured connection every request goes to the one
// target over the one upstream connection.
type session struct {
	id      uint64
	proto   string // audit proto of the requests: http or https
	target  target
	defPort int // the scheme's default port, for Host headers
	// pin refuses requests whose Host names another host than target.
	pin bool
	// refused: a reply was sent without reading all the client sent (a
	// denial); the connection ends with lingerClose.
	refused bool
	client  net.Conn
	clientR *bufio.Reader
	up      *upstreamConn
	// forward: a connection to the proxy listener (front.go), whose
	// requests each name a target. up then serves upTarget (over TLS if
	// upSecure) on the socket upRaw, and is kept between requests; upUsed
	// is when it last finished an exchange; reused says the request at
	// hand went out on a kept connection.
	forward  bool
	upTarget target
	upSecure bool
	upRaw    net.Conn
	upUsed   time.Time
	reused   bool
	// piped is what the raw pipe moved after a switch; nil before one.
	piped *pipeResult
	// dst is the upstream's address as audited, formatted once.
	dst string
}

func (s *session) dstAddr() string {
	if s.dst == "" && s.up != nil {
		s.dst = s.up.conn.RemoteAddr().String()
	}
	return s.dst
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
	if b, _ := s.clientR.Peek(s.clientR.Buffered()); headEnd(b, 0) < 0 {
		// The rest of the head must come within HeaderTimeout (most heads
		// arrive whole, and need no second deadline).
		_ = s.client.SetReadDeadline(time.Now().Add(p.limits.HeaderTimeout))
	}
	defer s.client.SetReadDeadline(time.Time{})
	err := scanHead(s.clientR, p.limits.MaxHeaderBytes)
	if errors.Is(err, bufio.ErrBufferFull) {
		// More than a small reader holds: move to one that holds the
		// largest head allowed.
		s.clientR = newSessionReader(s.client, s.clientR, p.limits.MaxHeaderBytes)
		err = scanHead(s.clientR, p.limits.MaxHeaderBytes)
	}
	if err != nil {
		switch {
		case errors.Is(err, errHeadTooLarge):
			p.refuse(s, nil, denyDecision(policies.ReasonHeaderTooLarge))
		case errors.Is(err, errBadFraming):
			p.refuse(s, nil, denyDecision(policies.ReasonBadRequest))
		}
		return nil, false
	}
	req, err := http.ReadRequest(s.clientR)
	if err != nil {
		p.refuse(s, nil, denyDecision(policies.ReasonBadRequest))
		return nil, false
	}
	if req.ProtoMajor != 1 {
		p.refuseHint(s, req, denyDecision(policies.ReasonBadRequest), "only HTTP/1.0 and HTTP/1.1 are spoken here")
		return nil, false
	}
	return req, true
}

var (
	errHeadTooLarge = errors.New("request head too large")
	errBadFraming   = errors.New("ambiguous request framing")
)

// scanHead waits until r holds a whole request head and checks its
// framing, or fails once limit bytes have come without one; it fails with
// bufio.ErrBufferFull when r's buffer fills first. Net/http's parser is
// lenient where an upstream may read the bytes differently (request
// smuggling), so the raw head is checked first.
func scanHead(r *bufio.Reader, limit int) error {
	from, want := 0, max(r.Buffered(), 1)
	for {
		b, err := r.Peek(min(want, limit))
		if end := headEnd(b, from); end >= 0 {
			return checkFraming(b[:end])
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

// headEnd is the length of the head in b (up to its blank line), or -1.
// A blank line ended by a bare LF counts, so checkFraming can refuse it.
func headEnd(b []byte, from int) int {
	i := bytes.Index(b[from:], []byte("\n\n"))
	j := bytes.Index(b[from:], []byte("\n\r\n"))
	switch {
	case i < 0 && j < 0:
		return -1
	case j < 0 || (i >= 0 && i < j):
		return from + i + 2
	default:
		return from + j + 3
	}
}

// checkFraming refuses what an upstream could frame differently from us:
// bare LF or CR, obs-fold continuation lines, NUL, whitespace before a
// colon, and Content-Length together with Transfer-Encoding.
func checkFraming(head []byte) error {
	var hasCL, hasTE bool
	for n := 0; len(head) > 0; n++ {
		i := bytes.IndexByte(head, '\n')
		if i < 1 || head[i-1] != '\r' {
			return errBadFraming // bare LF, or a last line without one
		}
		line := head[:i-1]
		head = head[i+1:]
		if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
			return errBadFraming
		}
		if n == 0 || len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errBadFraming // obs-fold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadFraming
		}
		name := line[:colon]
		if bytes.IndexByte(name, ' ') >= 0 || bytes.IndexByte(name, '\t') >= 0 {
			return errBadFraming
		}
		switch len(name) {
		case len("Content-Length"):
			hasCL = hasCL || bytes.EqualFold(name, []byte("Content-Length"))
		case len("Transfer-Encoding"):
			hasTE = hasTE || bytes.EqualFold(name, []byte("Transfer-Encoding"))
		}
	}
	if hasCL && hasTE {
		return errBadFraming
	}
	return nil
}

// pinHost refuses a request whose Host (or absolute URI) names another
// host than the connection's target: the upstream never sees the other
// name.
func (p *Proxy) pinHost(s *session, req *http.Request) bool {
	if !s.pin {
		return true
	}
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
	p.refuse(s, req, denyDecision(policies.ReasonHostMismatch))
	return false
}

// refuse answers req (nil for an unreadable head) with the denial dec,
// audits it with its rule, and tells the client the connection closes.
func (p *Proxy) refuse(s *session, req *http.Request, dec policies.Decision) {
	p.refuseHint(s, req, dec, "")
}

// refuseHint is refuse with a hint of its own (none: the reason's).
func (p *Proxy) refuseHint(s *session, req *http.Request, dec policies.Decision, hint string) {
	method, path, upg := "", "", ""
	if req != nil {
		method, path, upg = req.Method, requestPath(req.URL), upgradeType(req.Header)
	}
	d := newDenial(dec.Reason, method, s.target.Host, s.target.Port, path)
	if hint != "" {
		d.Hint = hint
	}
	if s.forward {
		// The connection ends: an upstream kept for an earlier request is
		// not this refusal's (no dst in its audit event).
		p.dropUpstream(s)
	}
	p.emitExchange(s, method, path, upg, dec, audit.DecisionDeny, d.Status)
	p.sendFinal(s, d.reply())
}

// sendFinal sends the last thing a client connection gets from us (a
// denial, an upstream error) without reading what it still sends: the
// connection then ends with lingerClose.
func (p *Proxy) sendFinal(s *session, reply jsonReply) {
	_ = p.writeWithin(s.client, func() error { return reply.write(s.client) })
	s.refused = true
}

// writeWithin runs write, which writes to c, with the idle limit as c's
// write deadline: a client that reads nothing must not hold us for good.
func (p *Proxy) writeWithin(c net.Conn, write func() error) error {
	_ = c.SetWriteDeadline(time.Now().Add(p.limits.IdleTunnelTimeout))
	err := write()
	_ = c.SetWriteDeadline(time.Time{})
	return err
}

// exchange decides one request, relays it and acts on the outcome. It
// returns true when the connection may carry another request.
func (p *Proxy) exchange(s *session, req *http.Request) bool {
	dec := p.decide(policies.Request{Host: s.target.Host, Port: s.target.Port, Method: req.Method,
		Path: requestPath(req.URL), Upgrade: upgradeType(req.Header)})
	if dec.Action != policies.Allow {
		p.refuse(s, req, dec)
		return false
	}
	if !p.addrAllowed(dec, s.up.conn) {
		// The tunnel's address was allowed for the connection; the rule
		// that allows this request must allow it too.
		p.refuse(s, req, denyDecision(policies.ReasonPrivateAddress))
		return false
	}
	return p.relayAllowed(s, req, dec)
}

// addrAllowed reports whether the address c is connected to passes the
// SSRF guard for dec, as a dial for dec would have checked it.
func (p *Proxy) addrAllowed(dec policies.Decision, c net.Conn) bool {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	return err == nil && p.cfg.Policy.AddrAllowed(dec, ap.Addr().Unmap())
}

// relayAllowed relays a request the policy allowed (dec) and acts on the
// outcome, as exchange does.
func (p *Proxy) relayAllowed(s *session, req *http.Request, dec policies.Decision) bool {
	path := requestPath(req.URL)
	upg := upgradeType(req.Header)
	prepareOutgoing(req, s, upg)
	replay := s.reused && replayable(req)
	res := p.relay(req, s.up, s.client, upg)
	if replay && res.Untouched && closedUnderUs(res.Err) {
		// The kept connection was closed under us before any answer:
		// send the request again on a new one, as http.Transport does.
		p.log.WithError(res.Err).Debugf("kept connection to %s failed; sending again", s.target)
		p.dropUpstream(s)
		if !p.dialUpstream(s, req, dec) {
			return false
		}
		res = p.relay(req, s.up, s.client, upg)
	}
	switch {
	case res.BodyErr != nil && res.Status == 0:
		// The client's body broke its own framing (a bad chunk size, say).
		p.refuse(s, req, denyDecision(policies.ReasonBadRequest))
		return false
	case res.Refused != "":
		p.emitExchange(s, req.Method, path, upg, denyDecision(res.Refused), audit.DecisionDeny, 0)
		return false
	case res.Err != nil && res.Status == 0:
		p.log.WithError(res.Err).Debugf("%s %s%s", req.Method, s.target, path)
		p.emitExchange(s, req.Method, path, upg, dec, audit.DecisionAllow, http.StatusBadGateway)
		_ = upstreamReply(res.Err).write(s.client)
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
		Upgrade: upg, Status: res.Status, Dst: s.dstAddr(), OverflowBytes: overflow,
	})
	pp := &pipe{client: s.client, upstream: s.up.conn, fromClient: pending(s.clientR), fromUpstream: pending(s.up.r),
		idle: p.limits.IdleTunnelTimeout}
	// Nothing reads HTTP on this connection again: let the readers go.
	s.clientR, s.up.r = nil, nil
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
		Upgrade: upg, Status: status, Dst: s.dstAddr(),
	})
}

// newSessionReader gives a client connection a reader large enough to
// hold a whole request head, starting with the bytes buffered had read.
func newSessionReader(c net.Conn, buffered *bufio.Reader, maxHead int) *bufio.Reader {
	var src io.Reader = c
	if n := buffered.Buffered(); n > 0 {
		b, _ := buffered.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), c)
	}
	return bufio.NewReaderSize(src, maxHead+4<<10)
}
