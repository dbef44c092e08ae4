package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/osandbox/osandbox/policies"
)

// OutcomeKind says what happens to a connection after one relayed request.
type OutcomeKind uint8

const (
	// Reusable: the exchange ended cleanly; read the next request.
	Reusable OutcomeKind = iota
	// Consumed: the connection cannot carry another request; close it.
	Consumed
	// Upgraded: a valid 101 was relayed; switch to raw bytes.
	Upgraded
)

func (k OutcomeKind) String() string {
	return [...]string{"reusable", "consumed", "upgraded"}[k]
}

// RelayOutcome is the result of every function that relays one HTTP
// request (DESIGN 2.4).
type RelayOutcome struct {
	Kind OutcomeKind
	// Overflow holds the upstream bytes read past the 101 head (Upgraded only).
	Overflow []byte
}

// upstreamConn is one connection to an upstream and the reader that owns
// its input, so nothing read past a response head is ever lost.
type upstreamConn struct {
	conn net.Conn
	r    *bufio.Reader
	lim  *headLimit
}

func newUpstreamConn(c net.Conn) *upstreamConn {
	lim := &headLimit{r: c, left: -1}
	return &upstreamConn{conn: c, r: bufio.NewReaderSize(lim, 16<<10), lim: lim}
}

// maxResponseHead bounds a response head, as http.Transport's
// MaxResponseHeaderBytes does on the forward path.
const maxResponseHead = 1 << 20

var errResponseHeadTooLarge = errors.New("response head too large")

// headLimit fails reads once left bytes were read while a head is awaited;
// left < 0 means no limit (bodies and upgraded streams).
type headLimit struct {
	r    io.Reader
	left int64
}

func (h *headLimit) Read(b []byte) (int, error) {
	if h.left < 0 {
		return h.r.Read(b)
	}
	if h.left == 0 {
		return 0, errResponseHeadTooLarge
	}
	if int64(len(b)) > h.left {
		b = b[:h.left]
	}
	n, err := h.r.Read(b)
	h.left -= int64(n)
	return n, err
}

// relayResult is what relay did.
type relayResult struct {
	Outcome RelayOutcome
	// Status is the final status sent to the client; 0 when none was.
	Status int
	// Refused is set when the upstream's 101 was not accepted: nothing was
	// sent to the client and both sides must be closed.
	Refused policies.Reason
	// Err is a transport failure (upstream reset, timeout, bad response).
	Err error
	// BodyErr is set when the client's request body could not be read
	// according to its framing; the upstream connection was closed.
	BodyErr error
	// Sent: an interim response went to the client.
	Sent bool
	// Untouched: not one byte of a response came from the upstream.
	Untouched bool
}

// relay sends req (already decided, hop-by-hop headers handled) on up and
// forwards the response to client. upgrade is the protocol the client
// asked for, or "". The request body is streamed while the response is
// read, so 100 Continue and early responses work.
func (p *Proxy) relay(req *http.Request, up *upstreamConn, client net.Conn, upgrade string) relayResult {
	// The response head must come within ResponseTimeout of the request
	// being sent; while a long upload is still going, only the idle limit
	// applies, counted from the last body bytes that moved.
	dl := &headDeadline{conn: up.conn, timeout: p.limits.ResponseTimeout, loose: p.limits.IdleTunnelTimeout}
	body := &bodyReader{ReadCloser: req.Body, dl: dl}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = body
	}
	dl.arm(p.limits.IdleTunnelTimeout)
	wrote := make(chan error, 1)
	if req.Body == nil || req.Body == http.NoBody {
		// Nothing to stream: the head goes out at once, from here.
		writeRequest(req, up.conn, body, dl, wrote)
	} else {
		go writeRequest(req, up.conn, body, dl, wrote)
	}
	// writeDone waits a moment for the request to be fully sent: the
	// upstream may answer a beat before our writer reports back.
	var sent, finished bool
	var writeErr error
	writeDone := func() (bool, error) {
		if finished {
			return sent, writeErr
		}
		select {
		case writeErr = <-wrote:
			finished, sent = true, writeErr == nil
			return finished, writeErr
		default:
		}
		t := time.NewTimer(writeGrace)
		defer t.Stop()
		select {
		case writeErr = <-wrote:
			finished, sent = true, writeErr == nil
		case <-t.C:
		}
		return finished, writeErr
	}
	var res relayResult
	interim := false // an interim response went to the client
	for {
		up.lim.left = maxResponseHead
		resp, err := http.ReadResponse(up.r, req)
		if err != nil && up.r.Buffered() > 0 {
			up.lim.left = 0 // bytes came, however few the limit saw
		}
		untouched := up.lim.left == maxResponseHead
		up.lim.left = -1
		dl.disarm()
		if err == nil && (resp.StatusCode < 100 || resp.StatusCode > 599) {
			// Not a status RFC 9110 defines: taken for an interim one it
			// would let this upstream answer the client's next request.
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if err != nil {
			res = relayResult{Outcome: RelayOutcome{Kind: Consumed}, Err: fmt.Errorf("read response: %w", err),
				Untouched: !interim && untouched}
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			if done, werr := writeDone(); !done || werr != nil {
				// The request is still being sent: a switch now would mix its
				// bytes into the new protocol.
				res = relayResult{Outcome: RelayOutcome{Kind: Consumed}, Err: errors.New("101 before the request was sent")}
				break
			}
			res = p.switchProtocols(resp, up, client, upgrade)
			break
		}
		if resp.StatusCode < 200 {
			// 100 Continue, 103 Early Hints: pass on and wait for the final
			// one. An HTTP/1.0 client would take them for the answer
			// (RFC 9110 15.2): it gets only the final one.
			if req.ProtoAtLeast(1, 1) {
				err := p.writeWithin(client, func() error { return writeHead(client, resp, false) })
				interim = true
				if err != nil {
					res = relayResult{Outcome: RelayOutcome{Kind: Consumed}, Err: err}
					break
				}
			}
			dl.arm(p.limits.IdleTunnelTimeout)
			continue
		}
		if done, _ := writeDone(); done && body.err != nil {
			// The client's body broke its framing: whatever the upstream made
			// of the part it got must not reach the client as an answer.
			resp.Body.Close()
			res = relayResult{Outcome: RelayOutcome{Kind: Consumed}, BodyErr: body.err}
			break
		}
		res = p.writeFinal(req, resp, up, client)
		break
	}
	res.Sent = interim
	if done, werr := writeDone(); !done || werr != nil {
		// The upstream answered before taking the whole body, or the body
		// could not be sent: this connection's framing is lost.
		res.Outcome = RelayOutcome{Kind: Consumed}
		up.conn.Close()
		if !finished {
			// The writer is still reading the client's body: closing the
			// client ends it, and the read error that follows is ours, not
			// a fault in the client's framing.
			client.Close()
			<-wrote
		} else {
			res.BodyErr = body.err
		}
	}
	return res
}

// writeGrace is how long a finished response waits for its request to be
// fully sent before the connection is given up as out of step.
const writeGrace = time.Second

func writeRequest(req *http.Request, up net.Conn, body *bodyReader, dl *headDeadline, done chan<- error) {
	// An upstream that takes nothing must not hold us past the idle limit.
	bw := getWriter(&idleIO{w: up, conn: up, idle: dl.loose})
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	putWriter(bw)
	_ = up.SetWriteDeadline(time.Time{})
	if err == nil {
		dl.sent()
	}
	if body.err != nil {
		// No response can be trusted for a request we could not finish.
		// Close the socket itself: a TLS close_notify would let the
		// upstream answer the half request first.
		if nc, ok := up.(interface{ NetConn() net.Conn }); ok {
			nc.NetConn().Close()
		}
		up.Close()
	}
	done <- err
}

// bodyReader remembers why reading the client's body failed, and tells
// the response deadline that the upload is still moving.
type bodyReader struct {
	io.ReadCloser
	err error
	dl  *headDeadline
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	if n > 0 {
		b.dl.progress()
	}
	return n, err
}

// switchProtocols validates a 101 before anything reaches the client
// (DESIGN 2.4): the client must have asked, and for the same protocol.
func (p *Proxy) switchProtocols(resp *http.Response, up *upstreamConn, client net.Conn, asked string) relayResult {
	refuse := func(r policies.Reason) relayResult {
		return relayResult{Outcome: RelayOutcome{Kind: Consumed}, Refused: r}
	}
	if asked == "" {
		return refuse(policies.ReasonUnsolicitedUpgrade)
	}
	got := upgradeType(resp.Header)
	if !validUpgradeToken(got) || !strings.EqualFold(got, asked) {
		return refuse(policies.ReasonUpgradeMismatch)
	}
	if err := p.writeWithin(client, func() error { return writeHead(client, resp, false) }); err != nil {
		return relayResult{Outcome: RelayOutcome{Kind: Consumed}, Err: err, Status: resp.StatusCode}
	}
	var overflow []byte
	if n := up.r.Buffered(); n > 0 {
		overflow, _ = up.r.Peek(n)
	}
	return relayResult{Outcome: RelayOutcome{Kind: Upgraded, Overflow: overflow}, Status: resp.StatusCode}
}

// writeFinal writes a final response with framing the client can
// trust, and says whether the connection may carry another request.
func (p *Proxy) writeFinal(req *http.Request, resp *http.Response, up *upstreamConn, client net.Conn) (res relayResult) {
	// spliced: the body went past resp.Body; readDeadline: the upstream
	// has a read deadline of the body's to clear.
	spliced, readDeadline := false, false
	defer func() {
		switch {
		case res.Outcome.Kind != Reusable:
			// The exchange ended early (the client left, a timeout) or the
			// connection closes anyway: closing beats reading the rest of
			// a body nobody will get.
			up.conn.Close()
		case !spliced:
			resp.Body.Close() // a spliced body went past resp.Body: nothing is left to drain
		}
		// The idle deadlines of the writes and the body end with them.
		if readDeadline {
			_ = up.conn.SetReadDeadline(time.Time{})
		}
		_ = client.SetWriteDeadline(time.Time{})
	}()
	// A client that reads nothing must not hold us (and the upstream)
	// longer than the idle limit.
	_ = client.SetWriteDeadline(time.Now().Add(p.limits.IdleTunnelTimeout))
	closeAfter := resp.Close || req.Close
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	if chunked && !req.ProtoAtLeast(1, 1) {
		// An HTTP/1.0 client cannot read chunks: it gets the body as it
		// is, ended by the close.
		chunked = false
	}
	bodyless := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified
	if !bodyless && !chunked && resp.ContentLength < 0 {
		closeAfter = true // body runs to EOF: only a close can end it
	}
	trailer := resp.Trailer
	removeHopHeaders(resp.Header)
	// The framing is ours to write, whatever the upstream's Connection
	// header named as hop-by-hop (Content-Length, even).
	if !bodyless && !chunked && resp.ContentLength >= 0 {
		resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	if chunked && !bodyless {
		resp.Header.Set("Transfer-Encoding", "chunked")
		if len(trailer) > 0 {
			names := make([]string, 0, len(trailer))
			for k := range trailer {
				names = append(names, k)
			}
			resp.Header.Set("Trailer", strings.Join(names, ", "))
		}
	}
	res = relayResult{Outcome: RelayOutcome{Kind: Reusable}, Status: resp.StatusCode}
	if closeAfter {
		res.Outcome.Kind = Consumed
	}
	out := &spyWriter{w: client}
	bw := getWriter(out)
	defer putWriter(bw)
	err := writeHeadTo(bw, resp, closeAfter)
	if err == nil && !bodyless && !chunked && resp.ContentLength >= 0 && resp.ContentLength <= int64(bw.Available()) {
		// A small body goes out with the head: one write, one TLS record.
		var body io.Reader = resp.Body
		if int64(up.r.Buffered()) < resp.ContentLength {
			// Not all here yet: the rest must come within the idle limit.
			readDeadline = true
			body = &idleIO{r: resp.Body, conn: up.conn, idle: p.limits.IdleTunnelTimeout}
		}
		if _, err := io.CopyN(bw, body, resp.ContentLength); err != nil {
			bw.Reset(nil)
			res = relayResult{Outcome: RelayOutcome{Kind: Consumed}, Err: fmt.Errorf("read body: %w", err)}
			if out.wrote {
				// A large head went out in part: the client has this
				// status, cut short, and must not get a second one.
				res.Status = resp.StatusCode
			}
			return res
		}
		bodyless = true
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		res.Outcome.Kind, res.Err = Consumed, err
		return res
	}
	if bodyless {
		return res
	}
	readDeadline = true
	spliced, err = p.copyBody(client, up, resp, chunked)
	if err != nil {
		res.Outcome.Kind, res.Err = Consumed, err
	}
	return res
}

// writers are the buffered writers of request and response heads.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

func getWriter(w io.Writer) *bufio.Writer {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writers.Put(bw)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody sends resp's body to client. Each read from the upstream and
// each write to the client must make progress within IdleTunnelTimeout:
// an upstream that stalls mid-body, or a client that stops reading, ends
// the exchange instead of holding both connections. A Content-Length body
// between two TCP connections is spliced (and resp.Body left unread:
// spliced is then true).
func (p *Proxy) copyBody(client net.Conn, up *upstreamConn, resp *http.Response, chunked bool) (spliced bool, err error) {
	idle := p.limits.IdleTunnelTimeout
	if !chunked && resp.ContentLength > 0 {
		src, ok1 := up.conn.(*net.TCPConn)
		dst, ok2 := client.(*net.TCPConn)
		if ok1 && ok2 {
			return true, spliceBody(dst, src, up.r, resp.ContentLength, idle)
		}
	}
	body := &idleIO{r: resp.Body, conn: up.conn, idle: idle}
	out := &idleIO{w: client, conn: client, idle: idle}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	if !chunked {
		_, err := io.CopyBuffer(out, body, *bp)
		return false, err
	}
	bw := getWriter(out)
	defer putWriter(bw)
	cw := httputil.NewChunkedWriter(bw)
	if _, err := io.CopyBuffer(flushEach{cw, bw}, body, *bp); err != nil {
		return false, err
	}
	if err := cw.Close(); err != nil {
		return false, err
	}
	if err := resp.Trailer.Write(bw); err != nil {
		return false, err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return false, err
	}
	return false, bw.Flush()
}

// spliceChunk is how much of a spliced body must move within one idle
// period: a body slower than spliceChunk per IdleTunnelTimeout is cut.
const spliceChunk = 256 << 10

// spliceBody sends n body bytes: those br (the upstream's reader) already
// holds, then the rest from src to dst in the kernel, a chunk per idle
// period.
func spliceBody(dst, src *net.TCPConn, br *bufio.Reader, n int64, idle time.Duration) error {
	if b := min(int64(br.Buffered()), n); b > 0 {
		head, _ := br.Peek(int(b))
		_ = dst.SetWriteDeadline(time.Now().Add(idle))
		if _, err := dst.Write(head); err != nil {
			return err
		}
		_, _ = br.Discard(int(b))
		n -= b
	}
	for n > 0 {
		now := time.Now()
		_ = src.SetReadDeadline(now.Add(idle))
		_ = dst.SetWriteDeadline(now.Add(idle))
		chunk := min(n, spliceChunk)
		m, err := dst.ReadFrom(io.LimitReader(src, chunk))
		n -= m
		if err != nil {
			return err
		}
		if m < chunk {
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

// spyWriter says whether anything was written through it.
type spyWriter struct {
	w     io.Writer
	wrote bool
}

func (s *spyWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.w.Write(b)
}

// idleIO reads r or writes w with conn's deadline moved IdleTunnelTimeout
// ahead of each call.
type idleIO struct {
	r    io.Reader
	w    io.Writer
	conn net.Conn
	idle time.Duration
}

func (i *idleIO) Read(b []byte) (int, error) {
	_ = i.conn.SetReadDeadline(time.Now().Add(i.idle))
	return i.r.Read(b)
}

func (i *idleIO) Write(b []byte) (int, error) {
	_ = i.conn.SetWriteDeadline(time.Now().Add(i.idle))
	return i.w.Write(b)
}

// flushEach writes each chunk through to the client as it arrives, so
// streamed responses (server-sent events) are not held back.
type flushEach struct {
	w  io.Writer
	bw *bufio.Writer
}

func (f flushEach) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.bw.Flush()
	}
	return n, err
}

// writeHead writes a response's status line and headers in one write.
func writeHead(w io.Writer, resp *http.Response, closeConn bool) error {
	bw := getWriter(w)
	defer putWriter(bw)
	if err := writeHeadTo(bw, resp, closeConn); err != nil {
		return err
	}
	return bw.Flush()
}

// writeHeadTo buffers a response's status line and headers in bw.
func writeHeadTo(bw *bufio.Writer, resp *http.Response, closeConn bool) error {
	text := http.StatusText(resp.StatusCode)
	if _, after, ok := strings.Cut(resp.Status, " "); ok && after != "" && validReason(after) {
		text = after
	}
	var num [3]byte
	code := resp.StatusCode % 1000
	num[0], num[1], num[2] = byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10)
	bw.WriteString("HTTP/1.1 ")
	bw.Write(num[:])
	bw.WriteByte(' ')
	bw.WriteString(text)
	bw.WriteString("\r\n")
	if err := resp.Header.Write(bw); err != nil {
		return err
	}
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// validReason reports whether an upstream's reason phrase may be passed
// on: HTAB, SP, VCHAR and obs-text only (RFC 9112 4). A bare CR or a NUL
// in it would let the upstream write a header line of its own.
func validReason(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// headDeadline is the read deadline for a response head, which the writer
// tightens once the whole request is sent.
type headDeadline struct {
	mu      sync.Mutex
	conn    net.Conn
	timeout time.Duration
	loose   time.Duration // while the body is still being sent
	waiting bool
	isSent  bool
	moved   time.Time // when progress last pushed the loose deadline on
}

// arm starts waiting for a head: the tight deadline if the request is
// already sent, else the loose one.
func (d *headDeadline) arm(loose time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.waiting = true
	t := loose
	if d.isSent {
		t = d.timeout
	}
	_ = d.conn.SetReadDeadline(time.Now().Add(t))
}

// progress pushes the loose deadline on while a body is being sent (at
// most once a second, or a quarter of the limit if that is shorter:
// deadlines are not free).
func (d *headDeadline) progress() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.waiting || d.isSent {
		return
	}
	if now := time.Now(); now.Sub(d.moved) >= min(time.Second, d.loose/4) {
		d.moved = now
		_ = d.conn.SetReadDeadline(now.Add(d.loose))
	}
}

func (d *headDeadline) sent() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.isSent = true
	if d.waiting {
		_ = d.conn.SetReadDeadline(time.Now().Add(d.timeout))
	}
}

// disarm clears the deadline once a head has arrived; bodies and upgraded
// streams have their own limits.
func (d *headDeadline) disarm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.waiting = false
	_ = d.conn.SetReadDeadline(time.Time{})
}
