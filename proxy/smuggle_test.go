package proxy

// The hardened request loop (session.go) on both inspected paths, plain
// CONNECT and intercepted TLS: heads an upstream could frame differently
// are refused with 400 and the connection closes; a head over the limit
// gets 431; a Host other than the target gets 421; valid bodies and
// pipelined requests pass intact and in order. Helpers are in
// mitm_test.go.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// smuggleCase is a request written byte for byte, and how the proxy must
// refuse it.
type smuggleCase struct {
	name   string
	head   func(host string) string // the bytes the client sends
	status int
	reason string
}

func smuggleCases() []smuggleCase {
	bad := func(name string, head func(host string) string) smuggleCase {
		return smuggleCase{name: name, head: head, status: http.StatusBadRequest, reason: "bad_request"}
	}
	return []smuggleCase{
		bad("content_length_and_chunked", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		}),
		bad("chunked_and_content_length", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"
		}),
		bad("differing_content_lengths", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
		}),
		bad("differing_content_length_list", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: 3, 5\r\n\r\nabcde"
		}),
		bad("duplicate_transfer_encoding", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		}),
		bad("transfer_encoding_not_only_chunked", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
		}),
		bad("signed_content_length", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nContent-Length: +3\r\n\r\nabc"
		}),
		bad("obs_fold", func(h string) string {
			return "GET /up HTTP/1.1\r\nHost: " + h + "\r\nX-Long: a\r\n folded\r\n\r\n"
		}),
		bad("obs_fold_tab", func(h string) string {
			return "GET /up HTTP/1.1\r\nHost: " + h + "\r\nX-Long: a\r\n\tContent-Length: 5\r\n\r\n"
		}),
		bad("bare_lf", func(h string) string {
			return "GET /up HTTP/1.1\nHost: " + h + "\n\n"
		}),
		bad("bare_lf_one_line", func(h string) string {
			return "GET /up HTTP/1.1\r\nHost: " + h + "\nX-A: b\r\n\r\n"
		}),
		bad("bare_cr", func(h string) string {
			return "GET /up HTTP/1.1\r\nHost: " + h + "\r\nX-A: a\rX-B: b\r\n\r\n"
		}),
		bad("nul_in_header", func(h string) string {
			return "GET /up HTTP/1.1\r\nHost: " + h + "\r\nX-A: a\x00b\r\n\r\n"
		}),
		bad("space_before_colon", func(h string) string {
			return "POST /up HTTP/1.1\r\nHost: " + h + "\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc"
		}),
		{name: "head_over_64KiB", status: http.StatusRequestHeaderFieldsTooLarge, reason: "header_too_large",
			head: func(h string) string {
				return "GET /up HTTP/1.1\r\nHost: " + h + "\r\nX-Big: " + strings.Repeat("a", 65<<10) + "\r\n\r\n"
			}},
	}
}

// TestInspectedRefusesAmbiguousFraming: every smuggling case, on both
// inspected paths, gets its 400 (or 431) JSON, the connection closes, the
// upstream sees nothing, and the audit has the deny with its reason.
func TestInspectedRefusesAmbiguousFraming(t *testing.T) {
	for _, mode := range inspectModes {
		t.Run(mode.name, func(t *testing.T) {
			up := startMITMUpstream(t, mode.tls)
			tp, ca := startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
			if !mode.tls {
				ca = nil
			}
			host := fmt.Sprintf("%s:%d", mitmHost, up.port)
			for _, tc := range smuggleCases() {
				t.Run(tc.name, func(t *testing.T) {
					c := openInspected(t, tp, ca, mitmHost, up.port)
					// A refused head may be refused before all of it is read:
					// write it aside, so the answer is read all the same.
					go io.WriteString(c.conn, tc.head(host))
					resp, body := c.response(http.MethodPost)
					wantRefusal(t, resp, body, tc.status, "bad_request", tc.reason)
					c.wantClosed()
				})
			}
			// The head of a chunked request is sent before its body is read,
			// so the upstream may see the bad-chunk case begin; the proxy
			// then closes that connection, and no request is ever complete.
			if seen := up.requests(); len(seen) != 0 {
				t.Errorf("upstream got whole requests: %+v", seen)
			}
			var got []string
			for _, e := range eventsOf(tp.events(t), audit.EventRequest) {
				got = append(got, e.Reason)
				if e.Decision != audit.DecisionDeny || e.Proto != mode.proto || e.Host != mitmHost || e.Port != up.port {
					t.Errorf("refusal audited as %+v", e)
				}
				if want := map[string]int{"bad_request": 400, "header_too_large": 431}[e.Reason]; e.Status != want {
					t.Errorf("%s audited with status %d, want %d", e.Reason, e.Status, want)
				}
			}
			cases := smuggleCases()
			if len(got) != len(cases) {
				t.Fatalf("%d request events (%v), want one per case (%d)", len(got), got, len(cases))
			}
			for i, tc := range cases {
				if got[i] != tc.reason {
					t.Errorf("case %s audited with reason %q, want %q", tc.name, got[i], tc.reason)
				}
			}
		})
	}
}

// TestInspectedBodiesAndPipelining: a chunked body and a Content-Length
// body reach the upstream exactly, pipelined requests in one write are
// answered in order on one connection, and each is audited.
func TestInspectedBodiesAndPipelining(t *testing.T) {
	for _, mode := range inspectModes {
		t.Run(mode.name, func(t *testing.T) {
			up := startMITMUpstream(t, mode.tls)
			tp, ca := startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
			if !mode.tls {
				ca = nil
			}
			host := fmt.Sprintf("%s:%d", mitmHost, up.port)
			c := openInspected(t, tp, ca, mitmHost, up.port)

			c.write("POST /chunked HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
			if resp, body := c.response(http.MethodPost); resp.StatusCode != 200 || body != "POST /chunked hello world" {
				t.Errorf("chunked POST: %d %q", resp.StatusCode, body)
			}
			c.write("POST /length HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 11\r\n\r\nhello again")
			if resp, body := c.response(http.MethodPost); resp.StatusCode != 200 || body != "POST /length hello again" {
				t.Errorf("Content-Length POST: %d %q", resp.StatusCode, body)
			}
			var pipelined strings.Builder
			for _, p := range []string{"/one", "/two", "/three"} {
				fmt.Fprintf(&pipelined, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", p, host)
			}
			c.write(pipelined.String())
			for _, p := range []string{"/one", "/two", "/three"} {
				resp, body := c.response(http.MethodGet)
				if resp.StatusCode != 200 || body != "GET "+p+" " {
					t.Errorf("pipelined %s: got %d %q", p, resp.StatusCode, body)
				}
			}
			c.conn.Close()

			seen := up.requests()
			want := []string{"POST /chunked hello world", "POST /length hello again", "GET /one ", "GET /two ", "GET /three "}
			if len(seen) != len(want) {
				t.Fatalf("upstream saw %+v", seen)
			}
			for i, s := range seen {
				if got := s.method + " " + s.uri + " " + s.body; got != want[i] {
					t.Errorf("upstream request %d: %q, want %q", i, got, want[i])
				}
			}
			for _, p := range []string{"/chunked", "/length", "/one", "/two", "/three"} {
				method := http.MethodGet
				if p == "/chunked" || p == "/length" {
					method = http.MethodPost
				}
				e := awaitRequest(t, tp, method, p)
				if e.Decision != audit.DecisionAllow || e.Status != 200 || e.Proto != mode.proto {
					t.Errorf("%s %s audited as %+v", method, p, e)
				}
			}
		})
	}
}

// TestInspectedSlowHead: a head that arrives in pieces, split inside the
// CRLF CRLF, is read whole and relayed (scanHead waits for the blank line).
func TestInspectedSlowHead(t *testing.T) {
	for _, mode := range inspectModes {
		t.Run(mode.name, func(t *testing.T) {
			up := startMITMUpstream(t, mode.tls)
			tp, ca := startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
			if !mode.tls {
				ca = nil
			}
			c := openInspected(t, tp, ca, mitmHost, up.port)
			head := fmt.Sprintf("GET /slow HTTP/1.1\r\nHost: %s:%d\r\n\r\n", mitmHost, up.port)
			for _, piece := range []string{head[:5], head[5 : len(head)-3], head[len(head)-3 : len(head)-1], head[len(head)-1:]} {
				c.write(piece)
				time.Sleep(20 * time.Millisecond)
			}
			if resp, body := c.response(http.MethodGet); resp.StatusCode != 200 || body != "GET /slow " {
				t.Errorf("slow head: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestInterceptHostMismatch: a request in an inspected tunnel naming any
// other authority than the CONNECT target gets 421 host_mismatch, on plain
// and intercepted TLS alike, and never reaches the upstream.
func TestInterceptHostMismatch(t *testing.T) {
	for _, mode := range inspectModes {
		t.Run(mode.name, func(t *testing.T) {
			up := startMITMUpstream(t, mode.tls)
			tp, ca := startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
			if !mode.tls {
				ca = nil
			}
			target := fmt.Sprintf("%s:%d", mitmHost, up.port)
			cases := []struct{ name, uri, host string }{
				{"other_host", "/x", fmt.Sprintf("www.%s:%d", mitmHost, up.port)},
				{"other_port", "/x", fmt.Sprintf("%s:%d", mitmHost, up.port+1)},
				{"default_port", "/x", mitmHost},
				{"absolute_uri", fmt.Sprintf("http://www.%s:%d/x", mitmHost, up.port), target},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := openInspected(t, tp, ca, mitmHost, up.port)
					c.write(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.uri, tc.host))
					resp, body := c.response(http.MethodGet)
					wantRefusal(t, resp, body, http.StatusMisdirectedRequest, "host_mismatch", "host_mismatch")
					c.wantClosed()
				})
			}
			t.Run("same_host", func(t *testing.T) {
				// The target named in another case, and as an absolute URI,
				// is the same target: both pass, and the upstream sees the
				// origin form with the Host pinned.
				c := openInspected(t, tp, ca, mitmHost, up.port)
				c.write(fmt.Sprintf("GET /case HTTP/1.1\r\nHost: %s\r\n\r\n", strings.ToUpper(target)))
				if resp, body := c.response(http.MethodGet); resp.StatusCode != http.StatusOK || body != "GET /case " {
					t.Errorf("Host in upper case: %d %s", resp.StatusCode, body)
				}
				c.write(fmt.Sprintf("GET http://%s/abs HTTP/1.1\r\nHost: %s\r\n\r\n", target, target))
				if resp, body := c.response(http.MethodGet); resp.StatusCode != http.StatusOK || body != "GET /abs " {
					t.Errorf("absolute URI of the target: %d %s", resp.StatusCode, body)
				}
			})
			var hosts []string
			for _, s := range up.requests() {
				hosts = append(hosts, s.host)
			}
			if len(hosts) != 2 || hosts[0] != target || hosts[1] != target {
				t.Errorf("upstream got Host headers %q, want %s twice (only the requests naming the target)", hosts, target)
			}
			var refused int
			for _, e := range eventsOf(tp.events(t), audit.EventRequest) {
				if e.Reason == "host_mismatch" {
					refused++
					if e.Decision != audit.DecisionDeny || e.Status != 421 || e.Proto != mode.proto || e.Host != mitmHost {
						t.Errorf("host_mismatch audited as %+v", e)
					}
				}
			}
			if refused != len(cases) {
				t.Errorf("%d host_mismatch events, want %d", refused, len(cases))
			}
		})
	}
}

// TestInspectedBadChunkSize: a body with an invalid chunk size ("zz")
// gets 400 bad_request, never an upstream's answer: on both inspected
// paths, from a Go server that reads the body (over TLS it sees the
// proxy's close_notify and answers 200 at once) and from one that answers
// as soon as it has the head. The head reaches the upstream before the
// body fails (it is streamed), but no whole request ever does.
func TestInspectedBadChunkSize(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	go answerOnHead(raw)
	goTLS, goPlain := startMITMUpstream(t, true), startMITMUpstream(t, false)
	upstreams := []struct {
		name string
		port int
		tls  bool
	}{
		{"go_server_tls", goTLS.port, true},
		{"go_server_plain", goPlain.port, false},
		{"answers_on_head_plain", raw.Addr().(*net.TCPAddr).Port, false},
	}
	var bugs []string
	for _, up := range upstreams {
		t.Run(up.name, func(t *testing.T) {
			tp, ca := startMITMProxy(t, mitmPolicy(up.port), goTLS.Certificate())
			if !up.tls {
				ca = nil
			}
			head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: %s:%d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", mitmHost, up.port)
			statuses := map[int]int{}
			for range 50 {
				c := openInspected(t, tp, ca, mitmHost, up.port)
				go io.WriteString(c.conn, head)
				resp, body := c.response(http.MethodPost)
				statuses[resp.StatusCode]++
				if resp.StatusCode == http.StatusBadRequest {
					wantRefusal(t, resp, body, http.StatusBadRequest, "bad_request", "bad_request")
					c.wantClosed()
				}
				c.conn.Close()
			}
			if statuses[http.StatusBadRequest] == 0 {
				t.Errorf("never a 400: %v", statuses)
			}
			if statuses[http.StatusBadRequest] != 50 {
				bugs = append(bugs, fmt.Sprintf("%s: %v", up.name, statuses))
			}
			if seen := append(goTLS.requests(), goPlain.requests()...); len(seen) != 0 {
				t.Errorf("upstream got whole requests: %+v", seen)
			}
		})
	}
	if len(bugs) > 0 {
		t.Fatalf("a bad chunk size must always get 400, never an upstream's answer to the half request (statuses per 50 tries: %s)",
			strings.Join(bugs, "; "))
	}
}

// answerOnHead serves ln: each connection gets a 200 once its request
// head has arrived, whatever follows.
func answerOnHead(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			_, _ = io.Copy(io.Discard, br)
		}()
	}
}

// wantRefusal checks a denial response: status, JSON error and reason,
// the decision header, and Connection: close.
func wantRefusal(t *testing.T, resp *http.Response, body string, status int, errName, reason string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	var d struct{ Error, Reason string }
	if err := json.Unmarshal([]byte(body), &d); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("denial is not JSON (%v, Content-Type %q): %s", err, resp.Header.Get("Content-Type"), body)
	}
	if d.Error != errName || d.Reason != reason {
		t.Errorf("denial error %q reason %q, want %q %q", d.Error, d.Reason, errName, reason)
	}
	if h := resp.Header.Get("X-Osandbox-Decision"); h != "deny; reason="+reason {
		t.Errorf("X-Osandbox-Decision %q", h)
	}
	if !resp.Close {
		t.Errorf("the refusal does not say Connection: close")
	}
}
