package proxy

// The outcomes of a relayed request other than Upgraded, in the inspected
// CONNECT loop: interim 1xx responses pass and the loop goes on; a body
// that runs to EOF, or Connection: close either way, ends the connection.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// TestRelayInterimResponses: 100 Continue and 103 Early Hints reach the
// client before the final 200, and the connection then carries another
// request.
func TestRelayInterimResponses(t *testing.T) {
	up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
		for {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			if req.Header.Get("Expect") == "100-continue" {
				_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			if req.URL.Path != "/again" {
				_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body)+3)+"\r\n\r\ngot"+string(body))
		}
	})
	tp := startProxy(t, relayPolicy(up.port, true), nil)
	for _, tc := range []struct {
		name      string
		expect100 bool
	}{
		{"103_before_200", false},
		{"100_continue_then_103", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tp, inspectedPath, up.port)
			body := "hello"
			headers := []string{"Content-Length: 5"}
			if tc.expect100 {
				// The client holds its body until it sees the 100, as curl
				// and Go's Transport do (for a while).
				c.send(http.MethodPost, "/upload", append(headers, "Expect: 100-continue"), nil)
				_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodPost})
				if err != nil {
					t.Fatalf("waiting for 100 Continue with the body held back: %v", err)
				}
				if resp.StatusCode != http.StatusContinue {
					t.Fatalf("got %s, want 100 Continue", resp.Status)
				}
				c.write(body)
			} else {
				c.send(http.MethodPost, "/upload", headers, []byte(body))
			}
			resp := c.read(http.MethodPost)
			if resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") != "</style.css>; rel=preload" {
				t.Fatalf("got %s Link %q, want 103 with the Link", resp.Status, resp.Header.Get("Link"))
			}
			requireBody(t, c.read(http.MethodPost), http.StatusOK, "gothello")
			c.send(http.MethodGet, "/again", nil, nil)
			requireBody(t, c.read(http.MethodGet), http.StatusOK, "got")
		})
	}
}

func requireBody(t *testing.T, resp *http.Response, status int, body string) {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != status || err != nil || string(b) != body {
		t.Fatalf("got %s %q (%v), want %d %q", resp.Status, b, err, status, body)
	}
}

// TestRelayOutcomes: whether the connection carries a second request
// depends on how the first response is framed.
func TestRelayOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		method     string // GET when ""
		reqHeaders []string
		response   string
		body       string // "hello" when ""; "-" for none
		closeAfter bool   // the upstream closes after the response
		reusable   bool
	}{
		{name: "head_with_length", method: http.MethodHead, response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", body: "-", reusable: true},
		{name: "no_content", response: "HTTP/1.1 204 No Content\r\n\r\n", body: "-", reusable: true},
		{name: "content_length", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", reusable: true},
		{name: "chunked", response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", reusable: true},
		{name: "no_length_read_to_eof", response: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", closeAfter: true},
		{name: "upstream_connection_close", response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"},
		{name: "client_connection_close", reqHeaders: []string{"Connection: close"},
			response: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "http10_response", response: "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startRawUpstream(t, func(u *rawUpstream, c *net.TCPConn, r *bufio.Reader) {
				for {
					if _, err := u.readRequest(r); err != nil {
						return
					}
					_, _ = io.WriteString(c, tc.response)
					if tc.closeAfter {
						return
					}
				}
			})
			tp := startProxy(t, relayPolicy(up.port, true), nil)
			method, body, status := tc.method, tc.body, http.StatusOK
			if method == "" {
				method = http.MethodGet
			}
			switch body {
			case "":
				body = "hello"
			case "-":
				body = ""
				if method != http.MethodHead {
					status = http.StatusNoContent
				}
			}
			c := dialRaw(t, tp, inspectedPath, up.port)
			c.send(method, "/first", tc.reqHeaders, nil)
			resp := c.read(method)
			requireBody(t, resp, status, body)
			if resp.Close == tc.reusable {
				t.Errorf("response says close=%v, want %v", resp.Close, !tc.reusable)
			}
			ev := tp.waitAudit(t, "request", func(e audit.Event) bool { return e.Event == audit.EventRequest })
			if ev.Decision != audit.DecisionAllow || ev.Status != status || ev.Rule != relayRule {
				t.Errorf("request event: %+v", ev)
			}
			if !tc.reusable {
				if rest := c.drain(3 * time.Second); len(rest) > 0 {
					t.Errorf("after the body: %q", rest)
				}
				return
			}
			c.send(method, "/second", nil, nil)
			requireBody(t, c.read(method), status, body)
			if got := len(up.requests()); got != 2 {
				t.Errorf("upstream saw %d requests, want 2", got)
			}
		})
	}
}
