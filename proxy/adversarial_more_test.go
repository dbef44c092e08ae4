package proxy

// More hostile clients and upstreams, on the forward path (absolute URIs
// on the proxy listener) and, where a case means something there, inside
// an inspected CONNECT: pipelined requests that change target or turn
// into a tunnel, authorities and schemes the proxy must not dial, framing
// headers an upstream could read differently, host names in other
// spellings, and upstream responses that try to inject a header line or
// break the order of responses. Helpers come from relay_helpers_test.go,
// hostile_test.go (hostilePolicy, smuggled) and smuggle_test.go
// (wantRefusal).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// scriptedUpstream answers a request for a path in script with the bytes
// given there, verbatim; any other request gets 200 and "METHOD URI BODY".
func scriptedUpstream(script map[string]string) upstreamHandler {
	return func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		for {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			if s, ok := script[req.URL.Path]; ok {
				_, _ = io.WriteString(c, s)
				continue
			}
			body := req.Method + " " + req.RequestURI + " " + string(b)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
}

// advDenial is the JSON body of a refusal.
type advDenial struct {
	Error, Reason, Host, Path string
	Port                      int
}

// readDenial reads the next response and requires the JSON denial for
// status and reason (wantRefusal), and returns it.
func readDenial(t *testing.T, c *rawClient, method string, status int, reason string) advDenial {
	t.Helper()
	resp := c.read(method)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("denial body: %v", err)
	}
	errName := "policy_denied"
	if status == http.StatusBadRequest {
		errName = "bad_request"
	}
	wantRefusal(t, resp, string(b), status, errName, reason)
	var d advDenial
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("denial %q: %v", b, err)
	}
	return d
}

// peekHead returns the raw bytes of the next response head, up to and
// including its blank line, without consuming them.
func peekHead(t *testing.T, c *rawClient) string {
	t.Helper()
	for want := 1; ; {
		b, err := c.r.Peek(want)
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return string(b[:i+4])
		}
		if err != nil {
			t.Fatalf("response head %q: %v", b, err)
		}
		// Look at all that has come; wait for more only when that is all.
		want = len(b) + 1
		if n := c.r.Buffered(); n > len(b) {
			want = n
		}
	}
}

// decisions are the request and connect events of the audit log.
func (tp *testProxy) decisions(t *testing.T) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, e := range tp.events(t) {
		if e.Event == audit.EventRequest || e.Event == audit.EventConnect {
			out = append(out, e)
		}
	}
	return out
}

// TestPipelinedDenialAfterAllowed: an allowed request and a denied one in
// one write on one client connection. The first is answered by the
// upstream, the second gets the 403 JSON denial and the connection ends;
// the denied request reaches no upstream (a denied target is never even
// connected to), and the audit has one allow and one deny on the same
// connection.
func TestPipelinedDenialAfterAllowed(t *testing.T) {
	up := startRawUpstream(t, scriptedUpstream(nil))
	other := startRawUpstream(t, scriptedUpstream(nil)) // no rule names its port
	cases := []struct {
		name   string
		path   relayPath
		second string // the denied request-target; "" for /admin/secret on the path's form
		reason string
		port   int // the port the denial names
		where  string
	}{
		{"forward/other_target", forwardPath, fmt.Sprintf("http://127.0.0.1:%d/x", other.port), "no_matching_rule", other.port, "/x"},
		{"forward/denied_path", forwardPath, "", "rule_deny", up.port, "/admin/secret"},
		{"inspected/denied_path", inspectedPath, "", "rule_deny", up.port, "/admin/secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, hostilePolicy(up.port), nil)
			c := dialRaw(t, tp, tc.path, up.port)
			before := len(up.requests())
			second := tc.second
			if second == "" {
				second = c.uri("/admin/secret")
			}
			c.write(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\nGET %s HTTP/1.1\r\nHost: %s\r\n\r\n",
				c.uri("/ok"), c.target, second, c.target))
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /ok ")
			d := readDenial(t, c, http.MethodGet, http.StatusForbidden, tc.reason)
			if d.Port != tc.port || d.Path != tc.where {
				t.Errorf("denial names port %d path %q, want %d %q", d.Port, d.Path, tc.port, tc.where)
			}
			c.drain(3 * time.Second)
			if seen := up.requests()[before:]; len(seen) != 1 || seen[0].RequestURI != "/ok" {
				t.Errorf("upstream saw %d requests (%v), want only GET /ok", len(seen), seen)
			}
			if n := other.acceptedConns(); n != 0 {
				t.Errorf("the denied target accepted %d connections", n)
			}
			evs := eventsOf(tp.events(t), audit.EventRequest)
			if len(evs) != 2 {
				t.Fatalf("%d request events (%+v), want 2", len(evs), evs)
			}
			if e := evs[0]; e.Decision != audit.DecisionAllow || e.Status != http.StatusOK || e.Path != "/ok" || e.Port != up.port {
				t.Errorf("first event %+v, want allow 200 /ok", e)
			}
			if e := evs[1]; e.Decision != audit.DecisionDeny || e.Reason != tc.reason || e.Status != http.StatusForbidden ||
				e.Port != tc.port || e.Path != tc.where || e.Conn != evs[0].Conn {
				t.Errorf("second event %+v, want deny %s 403 on port %d, same conn", e, tc.reason, tc.port)
			}
		})
	}
}

// TestForwardPipelinedGetThenConnect: a forward GET, a CONNECT and a
// request meant for the tunnel, all in one write. The GET is answered,
// the CONNECT gets its 200, the bytes after the CONNECT head go into the
// tunnel (none lost to the forward loop), the tunnel has its own upstream
// connection and the forward one is let go. One conn id carries the
// request and the connect event.
func TestForwardPipelinedGetThenConnect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		inspect bool
	}{
		{"blind_tunnel", false},
		{"inspected_tunnel", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startRawUpstream(t, scriptedUpstream(nil))
			tp := startProxy(t, relayPolicy(up.port, tc.inspect), nil)
			c := dialRaw(t, tp, forwardPath, up.port)
			c.write(fmt.Sprintf("GET http://%[1]s/first HTTP/1.1\r\nHost: %[1]s\r\n\r\n"+
				"CONNECT %[1]s HTTP/1.1\r\nHost: %[1]s\r\n\r\n"+
				"GET /second HTTP/1.1\r\nHost: %[1]s\r\n\r\n", c.target))
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /first ")
			if resp := c.read(http.MethodConnect); resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT after a forward request: %s", resp.Status)
			}
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /second ")
			if n := up.acceptedConns(); n != 2 {
				t.Errorf("upstream accepted %d connections, want 2 (the forward one, then the tunnel's)", n)
			}
			deadline := time.Now().Add(3 * time.Second)
			for up.open() > 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := up.open(); n != 1 {
				t.Errorf("%d upstream connections open, want only the tunnel's", n)
			}
			conn := tp.waitAudit(t, "connect", func(e audit.Event) bool { return e.Event == audit.EventConnect })
			if conn.Decision != audit.DecisionAllow || conn.Status != http.StatusOK || conn.Port != up.port {
				t.Errorf("connect event %+v", conn)
			}
			first := tp.waitAudit(t, "GET /first", func(e audit.Event) bool { return e.Event == audit.EventRequest && e.Path == "/first" })
			if first.Decision != audit.DecisionAllow || first.Status != http.StatusOK || first.Conn != conn.Conn {
				t.Errorf("request event %+v, want allow 200 on conn %d", first, conn.Conn)
			}
			if tc.inspect {
				second := tp.waitAudit(t, "GET /second", func(e audit.Event) bool { return e.Event == audit.EventRequest && e.Path == "/second" })
				if second.Decision != audit.DecisionAllow || second.Proto != audit.ProtoHTTP || second.Conn != conn.Conn {
					t.Errorf("tunnelled request event %+v", second)
				}
			}
		})
	}
}

// TestForwardUserinfo: userinfo in an absolute URI is not the authority.
// The request is decided and dialled on the host after the "@", the
// upstream's request line carries no userinfo and no Authorization header
// is made from it, and the credentials appear nowhere in the audit log.
func TestForwardUserinfo(t *testing.T) {
	const secret = "s3cr3t-pw"
	a := startRawUpstream(t, scriptedUpstream(nil))
	b := startRawUpstream(t, scriptedUpstream(nil)) // no rule names its port
	cases := []struct {
		name   string
		uri    string
		status int
		port   int // where the request goes
	}{
		{"user_and_password", fmt.Sprintf("http://user:%s@127.0.0.1:%d/x", secret, a.port), http.StatusOK, a.port},
		{"user_only", fmt.Sprintf("http://%s@127.0.0.1:%d/x", secret, a.port), http.StatusOK, a.port},
		// The allowed authority hidden as userinfo of a denied one.
		{"allowed_authority_as_userinfo", fmt.Sprintf("http://127.0.0.1:%d@127.0.0.1:%d/x", a.port, b.port), http.StatusForbidden, b.port},
		{"denied_authority_as_userinfo", fmt.Sprintf("http://127.0.0.1:%d@127.0.0.1:%d/x", b.port, a.port), http.StatusOK, a.port},
	}
	tp := startProxy(t, hostilePolicy(a.port), nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tp, forwardPath, a.port)
			before, conns := len(a.requests()), a.acceptedConns()
			c.write(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", tc.uri, a.port))
			if tc.status == http.StatusForbidden {
				d := readDenial(t, c, http.MethodGet, http.StatusForbidden, "no_matching_rule")
				if d.Port != tc.port {
					t.Errorf("denial names port %d, want %d", d.Port, tc.port)
				}
				if n := a.acceptedConns() - conns; n != 0 {
					t.Errorf("the upstream named in the userinfo accepted %d connections", n)
				}
				e := tp.waitAudit(t, "the denial", func(e audit.Event) bool {
					return e.Event == audit.EventRequest && e.Decision == audit.DecisionDeny
				})
				if e.Host != "127.0.0.1" || e.Port != tc.port || e.Path != "/x" {
					t.Errorf("denial audited as %+v, want 127.0.0.1:%d /x", e, tc.port)
				}
				return
			}
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /x ")
			seen := a.requests()[before:]
			if len(seen) != 1 {
				t.Fatalf("upstream saw %d requests", len(seen))
			}
			r := seen[0]
			if r.RequestURI != "/x" || r.Host != fmt.Sprintf("127.0.0.1:%d", a.port) {
				t.Errorf("upstream got %q Host %q, want /x without userinfo", r.RequestURI, r.Host)
			}
			if v, ok := r.Header["Authorization"]; ok {
				t.Errorf("upstream got Authorization %q made from the userinfo", v)
			}
		})
	}
	if n := b.acceptedConns(); n != 0 {
		t.Errorf("the unlisted upstream accepted %d connections", n)
	}
	if bytes.Contains(tp.audit.Bytes(), []byte(secret)) {
		t.Errorf("the audit log holds the userinfo secret:\n%s", tp.audit.Bytes())
	}
}

// TestBadAuthorityRefused: ports out of range, signed, named or given
// twice, a port that wraps round to the allowed one, and schemes other
// than http(s)/ws(s), on forward requests and CONNECT: each gets the 400
// JSON denial and one deny event with status 400, and the upstream, whose
// port the policy allows, is never connected to.
func TestBadAuthorityRefused(t *testing.T) {
	up := startRawUpstream(t, scriptedUpstream(nil))
	p := up.port
	get := func(uri string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", uri, p)
	}
	connect := func(authority string) string {
		return fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
	}
	cases := []struct{ name, head string }{
		{"port_zero", get("http://127.0.0.1:0/x")},
		{"port_wraps_to_allowed", get(fmt.Sprintf("http://127.0.0.1:%d/x", 65536+p))},
		{"port_99999", get("http://127.0.0.1:99999/x")},
		{"port_negative", get("http://127.0.0.1:-1/x")},
		{"port_signed", get(fmt.Sprintf("http://127.0.0.1:+%d/x", p))},
		{"port_named", get("http://127.0.0.1:http/x")},
		{"port_twice", get(fmt.Sprintf("http://127.0.0.1:%d:%d/x", p, p))},
		{"scheme_ftp", get(fmt.Sprintf("ftp://127.0.0.1:%d/x", p))},
		{"scheme_file", get("file:///etc/passwd")},
		{"scheme_gopher", get(fmt.Sprintf("gopher://127.0.0.1:%d/_GET%%20/admin/secret", p))},
		{"connect_port_zero", connect("127.0.0.1:0")},
		{"connect_port_wraps_to_allowed", connect(fmt.Sprintf("127.0.0.1:%d", 65536+p))},
		{"connect_port_negative", connect("127.0.0.1:-1")},
		{"connect_no_port", connect("127.0.0.1")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(p, false), nil)
			c := dialRaw(t, tp, relayPath{}, p)
			c.write(tc.head)
			readDenial(t, c, http.MethodGet, http.StatusBadRequest, "bad_request")
			c.drain(3 * time.Second)
			evs := tp.decisions(t)
			if len(evs) != 1 {
				t.Fatalf("%d request/connect events (%+v), want 1", len(evs), evs)
			}
			if e := evs[0]; e.Decision != audit.DecisionDeny || e.Reason != "bad_request" || e.Status != http.StatusBadRequest {
				t.Errorf("audited %+v, want deny bad_request 400", e)
			}
		})
	}
	if n := up.acceptedConns(); n != 0 {
		t.Errorf("the upstream accepted %d connections for refused authorities", n)
	}
}

// TestRequestFramingVariants: Transfer-Encoding and Content-Length values
// that some servers read one way and others another, each with a request
// the policy denies (GET /admin/secret) hidden behind the body. A value
// is either refused with 400 before anything is sent upstream, or framed
// exactly as the upstream will frame it: then the upstream gets the
// 5-byte body and the hidden request is read as the next request and
// decided (403). The upstream never sees /admin.
func TestRequestFramingVariants(t *testing.T) {
	const refused, framed = false, true
	chunked := "5\r\nhello\r\n0\r\n\r\n"
	cases := []struct {
		name   string
		header string
		body   string // before the hidden request
		framed bool
	}{
		{"te_identity", "Transfer-Encoding: identity", "hello", refused},
		{"te_chunked_identity", "Transfer-Encoding: chunked, identity", chunked, refused},
		{"te_identity_chunked", "Transfer-Encoding: identity, chunked", chunked, refused},
		{"te_gzip_chunked", "Transfer-Encoding: gzip, chunked", chunked, refused},
		{"te_chunked_upper_case", "Transfer-Encoding: CHUNKED", chunked, framed},
		{"cl_plus", "Content-Length: +5", "hello", refused},
		{"cl_hex", "Content-Length: 0x5", "hello", refused},
		{"cl_negative", "Content-Length: -5", "hello", refused},
		{"cl_overflow", "Content-Length: 18446744073709551621", "hello", refused},
		{"cl_leading_zero", "Content-Length: 05", "hello", framed},
		{"cl_trailing_space", "Content-Length: 5 ", "hello", framed},
		{"cl_tab", "Content-Length:\t5", "hello", framed},
	}
	up := startRawUpstream(t, scriptedUpstream(nil))
	tp := startProxy(t, hostilePolicy(up.port), nil)
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		for _, tc := range cases {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				c := dialRaw(t, tp, path, up.port)
				before := len(up.requests())
				c.write(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n%s%s",
					c.uri("/a"), c.target, tc.header, tc.body, smuggled(c.uri, c.target)))
				if !tc.framed {
					readDenial(t, c, http.MethodPost, http.StatusBadRequest, "bad_request")
					c.drain(3 * time.Second)
					if n := len(up.requests()) - before; n != 0 {
						t.Errorf("upstream got %d requests for a refused head", n)
					}
					return
				}
				requireBody(t, c.read(http.MethodPost), http.StatusOK, "POST /a hello")
				readDenial(t, c, http.MethodGet, http.StatusForbidden, "rule_deny")
				c.drain(3 * time.Second)
				if n := len(up.requests()) - before; n != 1 {
					t.Errorf("upstream got %d requests, want the POST only", n)
				}
			})
		}
	}
	for _, r := range up.requests() {
		if strings.Contains(r.RequestURI, "/admin") {
			t.Errorf("upstream got %s %s, which the policy denies", r.Method, r.RequestURI)
		}
	}
}

// TestUpstreamHeadInjection: an upstream that hides a header line in a
// folded header or behind a bare CR (in a header value, in the reason
// phrase of a final or an interim response) must not get it to the
// client as a line of its own: every head the client receives has only
// CRLF line ends, no bare CR or NUL, and no X-Injected line; the answer is
// the response (a fold turned into a space) or a 502.
func TestUpstreamHeadInjection(t *testing.T) {
	const final = "Content-Length: 2\r\n\r\nok"
	cases := []scriptedCase{
		{"fold_space", "HTTP/1.1 200 OK\r\nX-A: a\r\n X-Injected: 1\r\n" + final},
		{"fold_tab", "HTTP/1.1 200 OK\r\nX-A: a\r\n\tX-Injected: 1\r\n" + final},
		{"cr_in_value", "HTTP/1.1 200 OK\r\nX-A: a\rX-Injected: 1\r\n" + final},
		{"cr_in_reason", "HTTP/1.1 200 OK\rX-Injected: 1\r\n" + final},
		{"nul_in_reason", "HTTP/1.1 200 O\x00K\r\n" + final},
		{"cr_in_interim_reason", "HTTP/1.1 103 Early\rX-Injected: 1\r\n\r\nHTTP/1.1 200 OK\r\n" + final},
		{"cr_in_interim_value", "HTTP/1.1 103 Early Hints\r\nLink: <a>\rX-Injected: 1\r\n\r\nHTTP/1.1 200 OK\r\n" + final},
	}
	up, tp := startScripted(t, cases)
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		for _, tc := range cases {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				c := dialRaw(t, tp, path, up.port)
				c.send(http.MethodGet, "/"+tc.name, nil, nil)
				for {
					head := peekHead(t, c)
					for _, line := range strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n") {
						if strings.ContainsAny(line, "\r\n\x00") {
							t.Errorf("client got a head line with a bare CR, LF or NUL: %q", line)
						}
						if strings.HasPrefix(strings.ToLower(line), "x-injected") {
							t.Errorf("client got the injected line %q", line)
						}
					}
					resp := c.read(http.MethodGet)
					if resp.StatusCode >= 100 && resp.StatusCode < 200 {
						continue
					}
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadGateway {
						t.Errorf("status %d, want 200 or 502", resp.StatusCode)
					}
					if _, ok := resp.Header["X-Injected"]; ok {
						t.Errorf("client got header X-Injected")
					}
					break
				}
			})
		}
	}
}

// TestUpstreamManyInterimResponses: 1000 "100 Continue" heads before the
// final response neither hang nor break the exchange: the client gets
// each of them and then the final 200 with its body, the
// exchange is audited with 200, and the connection carries the next
// request.
func TestUpstreamManyInterimResponses(t *testing.T) {
	const interims = 1000
	up := startRawUpstream(t, scriptedUpstream(map[string]string{
		"/many": strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", interims) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}))
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, true), nil)
			c := dialRaw(t, tp, path, up.port)
			c.send(http.MethodGet, "/many", nil, nil)
			got := 0
			resp := c.read(http.MethodGet)
			for ; resp.StatusCode == http.StatusContinue; resp = c.read(http.MethodGet) {
				got++
			}
			requireBody(t, resp, http.StatusOK, "ok")
			if got != interims {
				t.Errorf("client got %d interim responses, the upstream sent %d (a proxy forwards 1xx: RFC 9110 15.2)", got, interims)
			}
			e := tp.waitAudit(t, "GET /many", func(e audit.Event) bool { return e.Event == audit.EventRequest && e.Path == "/many" })
			if e.Decision != audit.DecisionAllow || e.Status != http.StatusOK {
				t.Errorf("audited %+v, want allow 200", e)
			}
			c.send(http.MethodGet, "/next", nil, nil)
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /next ")
		})
	}
}

// TestHTTP10ClientGetsNoInterimResponses: HTTP/1.0 has no 1xx responses,
// and a server must not send one to an HTTP/1.0 client (RFC 9110 15.2): a
// 1.0 client would take a 103 or 100 for the answer. Through the proxy,
// a 1.0 client's first status line is the final 200.
func TestHTTP10ClientGetsNoInterimResponses(t *testing.T) {
	up := startRawUpstream(t, scriptedUpstream(map[string]string{
		"/hints": "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}))
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(up.port, true), nil)
			c := dialRaw(t, tp, path, up.port)
			c.write(fmt.Sprintf("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", c.uri("/hints"), c.target))
			raw := string(c.drain(3 * time.Second))
			status, _, _ := strings.Cut(raw, "\r\n")
			if !strings.HasPrefix(status, "HTTP/1.1 200 ") && !strings.HasPrefix(status, "HTTP/1.0 200 ") {
				t.Errorf("an HTTP/1.0 client's first status line is %q, want the final 200 (all: %q)", status, raw)
			}
			if !strings.HasSuffix(raw, "\r\n\r\nok") {
				t.Errorf("an HTTP/1.0 client got %q, want one response ending in the body", raw)
			}
		})
	}
}

// TestUpstreamContentLengthWithChunked: an upstream response with both
// Content-Length and Transfer-Encoding: chunked is framed by the chunks,
// and the Content-Length is removed before it goes on (RFC 9112 6.3), so
// the client reads one well-framed response however it resolves the
// conflict; the next request on the connection still works.
func TestUpstreamContentLengthWithChunked(t *testing.T) {
	chunks := "\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	cases := []scriptedCase{
		{"length_short", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked" + chunks},
		{"length_long", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked" + chunks},
		{"chunked_first", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3" + chunks},
		{"length_matches", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 15" + chunks},
	}
	up, tp := startScripted(t, cases)
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		for _, tc := range cases {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				c := dialRaw(t, tp, path, up.port)
				c.send(http.MethodGet, "/"+tc.name, nil, nil)
				if head := peekHead(t, c); strings.Contains(strings.ToLower(head), "content-length") {
					t.Errorf("client got Content-Length with a chunked body: %q", head)
				}
				requireBody(t, c.read(http.MethodGet), http.StatusOK, "hello")
				c.send(http.MethodGet, "/next", nil, nil)
				requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /next ")
			})
		}
	}
}

// pinnedName is pinned to 127.0.0.1 in TestCanonicalHostForms.
const pinnedName = "pinned.example"

// pinnedPolicy allows pinnedName and 127.0.0.1 on port, any path but
// /admin/**, which a deny rule refuses.
func pinnedPolicy(port int) string {
	return fmt.Sprintf(`version: 1
allow:
  - name: pinned
    hosts: [%[1]s, 127.0.0.1]
    ports: [%[2]d]
    http:
      - methods: ["*"]
        paths: ["/**"]
deny:
  - name: no-admin
    hosts: [%[1]s, 127.0.0.1]
    ports: [%[2]d]
    http:
      - methods: ["*"]
        paths: ["/admin/**"]
allow_private: [127.0.0.1/32]
`, pinnedName, port)
}

// TestCanonicalHostForms: a host in another spelling (upper case, a
// trailing dot, another IPv4 literal form) is decided, dialled, sent
// upstream and audited as its canonical form: the deny rule for /admin
// holds whatever the spelling, and the upstream's Host header is the
// canonical name. A name with two trailing dots is no host at all.
func TestCanonicalHostForms(t *testing.T) {
	up := startRawUpstream(t, scriptedUpstream(nil))
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	start := func(t *testing.T) *testProxy {
		return startProxy(t, pinnedPolicy(up.port), func(c *Config) {
			c.Pins = map[string][]netip.Addr{pinnedName: lo}
		})
	}
	port := strconv.Itoa(up.port)
	cases := []struct {
		name, host, canon string // canon "": refused as a bad request
	}{
		{"upper_case", "PINNED.EXAMPLE", pinnedName},
		{"trailing_dot", "pinned.example.", pinnedName},
		{"mixed_case_trailing_dot", "Pinned.Example.", pinnedName},
		{"ip_decimal", "2130706433", "127.0.0.1"},
		{"ip_hex_short", "0x7f.1", "127.0.0.1"},
		{"ip_octal", "0177.0.0.1", "127.0.0.1"},
		{"ip_trailing_dot", "127.0.0.1.", "127.0.0.1"},
		{"two_trailing_dots", "pinned.example..", ""},
	}
	for _, tc := range cases {
		authority := tc.host + ":" + port
		t.Run("forward/"+tc.name, func(t *testing.T) {
			tp := start(t)
			before := len(up.requests())
			c := dialRaw(t, tp, relayPath{}, up.port)
			c.write(fmt.Sprintf("GET http://%s/x HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority))
			if tc.canon == "" {
				readDenial(t, c, http.MethodGet, http.StatusBadRequest, "bad_request")
				return
			}
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /x ")
			seen := up.requests()[before:]
			if want := tc.canon + ":" + port; len(seen) != 1 || seen[0].Host != want {
				t.Errorf("upstream saw %d requests, want one with Host %s", len(seen), want)
			}
			c.write(fmt.Sprintf("GET http://%s/admin/x HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority))
			d := readDenial(t, c, http.MethodGet, http.StatusForbidden, "rule_deny")
			if d.Host != tc.canon {
				t.Errorf("denial names host %q, want %q", d.Host, tc.canon)
			}
			for _, e := range tp.decisions(t) {
				if e.Host != tc.canon || e.Port != up.port {
					t.Errorf("audited %s %s on %s:%d, want host %s", e.Decision, e.Path, e.Host, e.Port, tc.canon)
				}
			}
		})
		if tc.canon == "" {
			continue
		}
		t.Run("inspected/"+tc.name, func(t *testing.T) {
			tp := start(t)
			before := len(up.requests())
			c := dialRaw(t, tp, relayPath{}, up.port)
			c.path, c.target = inspectedPath, authority
			c.write(fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority))
			if resp := c.read(http.MethodConnect); resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT %s: %s", authority, resp.Status)
			}
			c.send(http.MethodGet, "/x", nil, nil) // Host: the CONNECT's spelling
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "GET /x ")
			seen := up.requests()[before:]
			if want := tc.canon + ":" + port; len(seen) != 1 || seen[0].Host != want {
				t.Errorf("upstream saw %d requests, want one with Host %s", len(seen), want)
			}
			c.send(http.MethodGet, "/admin/x", nil, nil)
			readDenial(t, c, http.MethodGet, http.StatusForbidden, "rule_deny")
			evs := tp.decisions(t)
			if len(evs) != 3 {
				t.Fatalf("%d connect/request events (%+v), want 3", len(evs), evs)
			}
			for _, e := range evs {
				if e.Host != tc.canon || e.Port != up.port {
					t.Errorf("audited %s %s %s on %s:%d, want host %s", e.Event, e.Decision, e.Path, e.Host, e.Port, tc.canon)
				}
			}
		})
	}
	for _, r := range up.requests() {
		if strings.Contains(r.RequestURI, "/admin") {
			t.Errorf("upstream got %s, which the policy denies", r.RequestURI)
		}
	}
}

// TestUpstreamStatusOutOfRange: a status code below 100 is neither an
// interim response nor a final one. A proxy that passes it on as interim
// and then relays the upstream's next response desynchronises the
// client, which takes the odd head as the answer and the next response as
// the answer to its next request, on the forward path even to a request
// for another target. The client must get one final response (status
// 200-599) per request, and the answer to the next request must be that
// request's.
func TestUpstreamStatusOutOfRange(t *testing.T) {
	odd := func(code string) string {
		return "HTTP/1.1 " + code + " Odd\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfrom-A"
	}
	a := startRawUpstream(t, scriptedUpstream(map[string]string{"/099": odd("099"), "/000": odd("000")}))
	b := startRawUpstream(t, scriptedUpstream(nil))
	tp := startProxy(t, hostilePolicy(a.port, b.port), nil)
	for _, path := range []relayPath{forwardPath, inspectedPath} {
		for _, code := range []string{"099", "000"} {
			t.Run(path.name+"/"+code, func(t *testing.T) {
				c := dialRaw(t, tp, path, a.port)
				c.send(http.MethodGet, "/"+code, nil, nil)
				resp := c.read(http.MethodGet)
				for resp.StatusCode >= 100 && resp.StatusCode < 200 {
					resp = c.read(http.MethodGet)
				}
				firstStatus := resp.StatusCode
				first, _ := io.ReadAll(resp.Body)
				if resp.StatusCode < 200 || resp.StatusCode > 599 {
					t.Errorf("client got status %d as the answer; want a final status (502 for the bad one)", resp.StatusCode)
				}
				if resp.Close {
					return // a clean end: nothing can be out of step
				}
				// The next request; on the forward path to another target.
				next := c.uri("/next")
				if !path.connect {
					next = fmt.Sprintf("http://127.0.0.1:%d/next", b.port)
				}
				c.write(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", next, c.target))
				resp = c.read(http.MethodGet)
				body, _ := io.ReadAll(resp.Body)
				if string(body) != "GET /next " {
					t.Errorf("after %d %q, the next request got %d %q, want GET /next's answer", firstStatus, first, resp.StatusCode, body)
				}
			})
		}
	}
}

// scriptedCase is a raw upstream response, served at "/"+name.
type scriptedCase struct{ name, response string }

// startScripted starts an upstream that answers each case's path with its
// response, and a proxy whose policy allows (and inspects) it.
func startScripted(t *testing.T, cases []scriptedCase) (*rawUpstream, *testProxy) {
	t.Helper()
	script := map[string]string{}
	for _, tc := range cases {
		script["/"+tc.name] = tc.response
	}
	up := startRawUpstream(t, scriptedUpstream(script))
	return up, startProxy(t, relayPolicy(up.port, true), nil)
}
