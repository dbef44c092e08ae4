package proxy

// Hostile clients and hostile upstreams on every path where the proxy
// parses HTTP: forward (absolute URIs, goproxy), the forward path to an
// https:// upstream, inspected CONNECT (our request loop over plain HTTP)
// and intercepted TLS (the same loop inside TLS the proxy terminates). The
// capture path runs the same loop; e2e/faults_test.go drives it from
// inside a sandbox. Every case must end in a clear status or a clean close
// within a bound: never a hang, a panic, or a goroutine or fd left behind.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// hostileWait bounds every read of these tests: waiting longer is a hang.
const hostileWait = 10 * time.Second

// hostileLimits are short, so every timeout fires within the test, yet
// long enough for a loaded machine running -race to meet them honestly.
var hostileLimits = Limits{
	HeaderTimeout: time.Second, ResponseTimeout: time.Second,
	TLSTimeout: time.Second, DialTimeout: 2 * time.Second,
	IdleClientTimeout: 3 * time.Second, IdleTunnelTimeout: 3 * time.Second,
}

// hostileMode is how a client reaches the upstream through the proxy.
type hostileMode int

const (
	modeForward     hostileMode = iota // GET http://127.0.0.1:port/p
	modeForwardTLS                     // GET https://127.0.0.1:port/p: the proxy speaks TLS upstream
	modeInspected                      // CONNECT, then plain origin-form requests
	modeIntercepted                    // CONNECT, then TLS the proxy terminates
)

var hostileModes = []struct {
	name string
	mode hostileMode
}{
	{"forward", modeForward},
	{"forward_https", modeForwardTLS},
	{"inspected_connect", modeInspected},
	{"intercepted_tls", modeIntercepted},
}

// upstreamTLS says whether the upstream of a mode speaks TLS.
func (m hostileMode) upstreamTLS() bool { return m == modeForwardTLS || m == modeIntercepted }

// hostileUpstream is a TCP server on 127.0.0.1, TLS when tlsCfg is set,
// that hands each connection to a handler written to misbehave.
type hostileUpstream struct {
	port int
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	seen  []string // request-targets read by readRequest
}

type hostileHandler func(u *hostileUpstream, c net.Conn, r *bufio.Reader)

func startHostileUpstream(t *testing.T, tlsCfg *tls.Config, handle hostileHandler) *hostileUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &hostileUpstream{port: ln.Addr().(*net.TCPAddr).Port, ln: ln, conns: map[net.Conn]struct{}{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(hostileWait))
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer func() {
					c.Close()
					u.mu.Lock()
					delete(u.conns, c)
					u.mu.Unlock()
				}()
				var conn net.Conn = c
				if tlsCfg != nil {
					tc := tls.Server(c, tlsCfg)
					if tc.Handshake() != nil {
						return
					}
					conn = tc
				}
				handle(u, conn, bufio.NewReader(conn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

func (u *hostileUpstream) readRequest(r *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(r)
	if err == nil {
		u.mu.Lock()
		u.seen = append(u.seen, req.Method+" "+req.RequestURI)
		u.mu.Unlock()
	}
	return req, err
}

func (u *hostileUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

func (u *hostileUpstream) open() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns)
}

// Upstream behaviours.

// answerOK answers every request with 200 "ok" once its body is read.
func answerOK(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	for {
		req, err := u.readRequest(r)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func answerGarbage(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	if _, err := u.readRequest(r); err == nil {
		_, _ = io.WriteString(c, "\x00\x01\x02 this is not HTTP at all\r\n\r\n")
	}
}

// resetMidBody promises 100000 bytes, sends 1000 and resets the connection.
func resetMidBody(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	if _, err := u.readRequest(r); err != nil {
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 1000))
	time.Sleep(50 * time.Millisecond) // let the partial body reach the client first
	resetConn(c)
}

// resetConn closes c's socket with an RST rather than a FIN.
func resetConn(c net.Conn) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// neverAnswer reads the request and then says nothing until the proxy
// gives up and closes.
func neverAnswer(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	if _, err := u.readRequest(r); err == nil {
		_, _ = io.Copy(io.Discard, r)
	}
}

// closeInHandshake is a plain listener: the proxy's TLS ClientHello gets a
// close in answer.
func closeInHandshake(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	_, _ = r.Peek(1)
}

// switchUnasked answers with a 101 for proto whatever was asked, with
// bytes of the new protocol in the same write.
func switchUnasked(proto string) hostileHandler {
	return func(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
		if _, err := u.readRequest(r); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\nNEW-PROTOCOL-BYTES", proto)
		_, _ = io.Copy(io.Discard, r)
	}
}

// hugeResponseHead sends a response head of 8 MiB: one header line that
// never seems to end.
func hugeResponseHead(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	if _, err := u.readRequest(r); err != nil {
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Huge: ")
	chunk := strings.Repeat("a", 64<<10)
	for range 128 {
		if _, err := io.WriteString(c, chunk); err != nil {
			return
		}
	}
	_, _ = io.WriteString(c, "\r\nContent-Length: 2\r\n\r\nok")
}

// hostileCert is a self-signed certificate for 127.0.0.1 that the proxy
// trusts as an upstream.
func hostileCert(t *testing.T) (*tls.Config, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos: []string{"http/1.1"}}, cert
}

// hostilePolicy inspects every port given on 127.0.0.1: any method and
// path, websocket upgrades too, except below /admin, which a deny rule
// refuses. A request that reaches the upstream at /admin got past it.
func hostilePolicy(ports ...int) string {
	ps := make([]string, len(ports))
	for i, p := range ports {
		ps[i] = strconv.Itoa(p)
	}
	list := strings.Join(ps, ", ")
	return fmt.Sprintf(`version: 1
allow:
  - name: hostile
    hosts: [127.0.0.1]
    ports: [%[1]s]
    http:
      - methods: ["*"]
        paths: ["/**"]
        upgrade: [websocket]
deny:
  - name: no-admin
    hosts: [127.0.0.1]
    ports: [%[1]s]
    http:
      - methods: ["*"]
        paths: ["/admin/**"]
`, list)
}

// hostileEnv is a proxy with short limits, a CA, and trust in the TLS
// upstreams' certificate.
type hostileEnv struct {
	tp     *testProxy
	ca     *CA
	tlsCfg *tls.Config
}

func newHostileEnv(t *testing.T, tlsCfg *tls.Config, cert *x509.Certificate, ports ...int) *hostileEnv {
	t.Helper()
	ca, err := NewCA("hostile", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tp := startProxy(t, hostilePolicy(ports...), func(c *Config) {
		c.CA = ca
		c.UpstreamCAs = x509.NewCertPool()
		c.UpstreamCAs.AddCert(cert)
		c.Limits = hostileLimits
	})
	return &hostileEnv{tp: tp, ca: ca, tlsCfg: tlsCfg}
}

// hostileClient is one client connection through the proxy to
// 127.0.0.1:port in some mode.
type hostileClient struct {
	t      *testing.T
	mode   hostileMode
	tcp    net.Conn
	conn   net.Conn // TLS inside the tunnel when intercepted, else tcp with r buffering
	r      *bufio.Reader
	target string // 127.0.0.1:port
}

// dialHostile connects to the proxy and, on the CONNECT modes, opens the
// tunnel (and, intercepted, completes TLS with the proxy's leaf).
func dialHostile(t *testing.T, env *hostileEnv, mode hostileMode, port int) *hostileClient {
	t.Helper()
	c := dialTunnel(t, env, mode, port)
	if mode == modeIntercepted {
		roots := x509.NewCertPool()
		roots.AddCert(env.ca.Certificate())
		tc := tls.Client(c.conn, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS with the proxy: %v", err)
		}
		c.conn, c.r = tc, bufio.NewReader(tc)
	}
	return c
}

// dialTunnel is dialHostile without the TLS: an intercepted tunnel is left
// raw, for cases that break the handshake itself.
func dialTunnel(t *testing.T, env *hostileEnv, mode hostileMode, port int) *hostileClient {
	t.Helper()
	tcp, err := net.DialTimeout("tcp", env.tp.Addr, hostileWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	_ = tcp.SetDeadline(time.Now().Add(hostileWait))
	c := &hostileClient{t: t, mode: mode, tcp: tcp, r: bufio.NewReader(tcp), target: fmt.Sprintf("127.0.0.1:%d", port)}
	c.conn = &bufConn{Conn: tcp, r: c.r}
	if mode == modeInspected || mode == modeIntercepted {
		fmt.Fprintf(tcp, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", c.target, c.target)
		resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT %s: %v %v", c.target, resp, err)
		}
	}
	return c
}

// uri is the request-target for path in this mode.
func (c *hostileClient) uri(path string) string {
	switch c.mode {
	case modeForward:
		return "http://" + c.target + path
	case modeForwardTLS:
		return "https://" + c.target + path
	}
	return path
}

// send writes s aside: a refused head may be refused before all of it is
// read, and the answer must be read all the same.
func (c *hostileClient) send(s string) {
	go func() { _, _ = io.WriteString(c.conn, s) }()
}

// outcome reads the answer to the request sent: its status and body, or
// status 0 when the proxy closed without one. A read that outlasts
// hostileWait is a hang and fails the test.
func (c *hostileClient) outcome() (status int, body string, bodyErr error) {
	c.t.Helper()
	_ = c.tcp.SetReadDeadline(time.Now().Add(hostileWait))
	resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodGet})
	if err != nil {
		c.failOnHang(err)
		return 0, "", nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.failOnHang(err)
	}
	return resp.StatusCode, string(b), err
}

// wantClosed fails unless the proxy ends the connection within d.
func (c *hostileClient) wantClosed(d time.Duration) {
	c.t.Helper()
	_ = c.tcp.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open %v later", d)
	}
}

func (c *hostileClient) failOnHang(err error) {
	c.t.Helper()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("no answer and no close within %v: %v", hostileWait, err)
	}
}

// hostileRequest is a request head written byte for byte, and the
// statuses it may get on each mode (0: the proxy closes without answering).
type hostileRequest struct {
	name string
	// head is the whole request; u(p) is the request-target for path p, h
	// the authority.
	head func(u func(string) string, h string) string
	// want lists the acceptable outcomes (the same request loop reads
	// the heads on every mode).
	want []int
}

// smuggled is a request that the policy denies; it is hidden in the bodies
// of the smuggling cases, and the upstream must never see it.
func smuggled(u func(string) string, h string) string {
	return "GET " + u("/admin/secret") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
}

func hostileRequests() []hostileRequest {
	bad := []int{http.StatusBadRequest}
	cases := []hostileRequest{
		{"cl_te", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s",
				u("/a"), h, 5+len(s), s)
		}, bad},
		{"te_cl", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
				u("/a"), h, len(s), s)
		}, bad},
		{"duplicate_content_length", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n%s", u("/a"), h, len(s), s)
		}, bad},
		{"content_length_list", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0, %d\r\n\r\n%s", u("/a"), h, len(s), s)
		}, bad},
		{"obs_fold_transfer_encoding", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s",
				u("/a"), h, 5+len(s), s)
		}, bad},
		{"transfer_encoding_tab", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding:\tchunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s",
				u("/a"), h, 5+len(s), s)
		}, bad},
		{"transfer_encoding_xchunked", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: xchunked\r\nContent-Length: %d\r\n\r\n%s",
				u("/a"), h, len(s), s)
		}, bad},
		{"bare_lf", func(u func(string) string, h string) string {
			s := smuggled(u, h)
			return fmt.Sprintf("POST %s HTTP/1.1\nHost: %s\nContent-Length: %d\n\n%s", u("/a"), h, len(s), s)
		}, bad},
		{"chunk_size_overflow", func(u func(string) string, h string) string {
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000a\r\nabcdefghij\r\n0\r\n\r\n%s",
				u("/a"), h, smuggled(u, h))
		}, bad},
		{"chunk_size_negative", func(u func(string) string, h string) string {
			return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n%s0\r\n\r\n", u("/a"), h, smuggled(u, h))
		}, bad},
		{"head_over_64KiB", func(u func(string) string, h string) string {
			return "GET " + u("/a") + " HTTP/1.1\r\nHost: " + h + "\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"
		}, []int{http.StatusRequestHeaderFieldsTooLarge}},
		{"10000_headers_over_limit", func(u func(string) string, h string) string {
			var b strings.Builder
			fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u("/a"), h)
			for i := range 10000 {
				fmt.Fprintf(&b, "X-Header-%05d: v\r\n", i)
			}
			return b.String() + "\r\n"
		}, []int{http.StatusRequestHeaderFieldsTooLarge}},
		{"10000_headers_within_limit", func(u func(string) string, h string) string {
			return "GET " + u("/many") + " HTTP/1.1\r\nHost: " + h + "\r\n" + strings.Repeat("a:b\r\n", 10000) + "\r\n"
		}, []int{http.StatusOK}},
		{"method_with_at", func(u func(string) string, h string) string {
			return "G@T " + u("/a") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, bad},
		{"method_with_control", func(u func(string) string, h string) string {
			return "GE\x7fT " + u("/a") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, bad},
		{"method_empty", func(u func(string) string, h string) string {
			return " " + u("/a") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, bad},
		{"method_8KiB", func(u func(string) string, h string) string {
			return strings.Repeat("G", 8<<10) + " " + u("/a") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, []int{http.StatusForbidden, http.StatusOK}},
		{"no_version", func(u func(string) string, h string) string {
			return "GET " + u("/a") + "\r\nHost: " + h + "\r\n\r\n"
		}, bad},
		{"http_2_0_version", func(u func(string) string, h string) string {
			return "GET " + u("/a") + " HTTP/2.0\r\nHost: " + h + "\r\n\r\n"
		}, bad},
		{"nul_in_target", func(u func(string) string, h string) string {
			return "GET " + u("/a\x00b") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, bad},
		{"two_host_headers", func(u func(string) string, h string) string {
			return "GET " + u("/a") + " HTTP/1.1\r\nHost: " + h + "\r\nHost: evil.example\r\n\r\n"
		}, bad},
		{"dot_segments_to_admin", func(u func(string) string, h string) string {
			return "GET " + u("/public/../admin/secret") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, []int{http.StatusForbidden}},
		{"encoded_dot_segments_to_admin", func(u func(string) string, h string) string {
			return "GET " + u("/public/%2e%2E/admin/secret") + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
		}, []int{http.StatusForbidden}},
	}
	return cases
}

// TestHostileRequests: on every mode, each hostile request gets a clear
// status or a clean close, and nothing the policy denies (the /admin
// request hidden in the smuggling cases, the traversals) ever reaches the
// upstream. Every refusal carries the JSON denial and is audited: one deny
// event per refused request, with the status the client got.
func TestHostileRequests(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	plain := startHostileUpstream(t, nil, answerOK)
	secure := startHostileUpstream(t, tlsCfg, answerOK)
	env := newHostileEnv(t, tlsCfg, cert, plain.port, secure.port)
	check := leakCheck(t, env.tp)
	refused := map[int]int{} // status -> refusals the clients saw
	for _, m := range hostileModes {
		up := plain
		if m.mode.upstreamTLS() {
			up = secure
		}
		t.Run(m.name, func(t *testing.T) {
			for _, tc := range hostileRequests() {
				t.Run(tc.name, func(t *testing.T) {
					c := dialHostile(t, env, m.mode, up.port)
					c.send(tc.head(c.uri, c.target))
					status, body, _ := c.outcome()
					if !slices.Contains(tc.want, status) {
						t.Errorf("status %d (body %q), want one of %v", status, body, tc.want)
					}
					if status >= 400 && status < 500 {
						refused[status]++
						var d struct{ Error, Reason string }
						if err := json.Unmarshal([]byte(body), &d); err != nil || d.Error == "" || d.Reason == "" {
							t.Errorf("refusal body %q is not the JSON denial (%v)", body, err)
						}
					}
					c.tcp.Close()
				})
			}
		})
		for _, seen := range up.requests() {
			if strings.Contains(seen, "/admin") {
				t.Errorf("%s: the upstream got %q, which the policy denies", m.name, seen)
			}
		}
	}
	audited := map[int]int{}
	for _, e := range eventsOf(env.tp.events(t), audit.EventRequest) {
		if e.Decision == audit.DecisionDeny {
			audited[e.Status]++
		}
	}
	if !maps.Equal(refused, audited) {
		t.Errorf("refusals by status: clients saw %v, the audit has %v", refused, audited)
	}
	check()
}

// TestHostileSlowClients: a head that trickles in (slowloris), a tunnel
// that stays silent, and a TLS handshake that stalls are all closed once
// their limit passes (HeaderTimeout, TLSTimeout: 1 s here).
func TestHostileSlowClients(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	plain := startHostileUpstream(t, nil, answerOK)
	secure := startHostileUpstream(t, tlsCfg, answerOK)
	env := newHostileEnv(t, tlsCfg, cert, plain.port, secure.port)
	check := leakCheck(t, env.tp)
	const bound = 4 * time.Second // limit 1 s, plus slack under -race
	cases := []struct {
		name string
		mode hostileMode
		run  func(c *hostileClient)
	}{
		{"forward_trickled_head", modeForward, trickle},
		{"forward_silent", modeForward, func(*hostileClient) {}},
		{"inspected_trickled_head", modeInspected, trickle},
		{"inspected_silent_tunnel", modeInspected, func(*hostileClient) {}},
		{"intercepted_stalled_handshake", modeIntercepted, func(c *hostileClient) {
			_, _ = c.tcp.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a ClientHello that never finishes
		}},
		{"intercepted_silent_tunnel", modeIntercepted, func(*hostileClient) {}},
		{"intercepted_trickled_head", modeIntercepted, nil}, // TLS first, then trickle inside it
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := plain
			if tc.mode.upstreamTLS() {
				up = secure
			}
			var c *hostileClient
			if tc.run == nil {
				c = dialHostile(t, env, tc.mode, up.port)
				tc.run = trickle
			} else {
				c = dialTunnel(t, env, tc.mode, up.port)
			}
			start := time.Now()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tc.run(c)
				<-stop
			}()
			c.wantClosed(bound)
			if d := time.Since(start); d > bound {
				t.Errorf("closed after %v, want within %v", d, bound)
			}
		})
	}
	if n := len(plain.requests()) + len(secure.requests()); n != 0 {
		t.Errorf("the upstreams got %d requests from slow clients", n)
	}
	check()
}

// trickle sends a request head one byte every 50 ms: it would take 5 s.
func trickle(c *hostileClient) {
	head := "GET " + c.uri("/slow") + " HTTP/1.1\r\nHost: " + c.target + "\r\nX-Pad: " + strings.Repeat("p", 60) + "\r\n\r\n"
	for i := range len(head) {
		if _, err := c.conn.Write([]byte{head[i]}); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHostileUpstreams: upstreams that answer garbage, reset mid-body,
// never answer, close during the TLS handshake, or switch protocols unasked
// or to another protocol. Each client
// gets a clear status (502 where no usable answer came) or a clean close,
// and each case is audited.
func TestHostileUpstreams(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	type upstreams struct{ plain, secure *hostileUpstream }
	start := func(h hostileHandler, tlsHandshake bool) upstreams {
		secureCfg := tlsCfg
		if !tlsHandshake {
			secureCfg = nil
		}
		return upstreams{startHostileUpstream(t, nil, h), startHostileUpstream(t, secureCfg, h)}
	}
	const (
		closed    = 0  // no response, connection closed
		truncated = -1 // a 200 whose body ends early, connection closed
	)
	cases := []struct {
		name    string
		up      upstreams
		upgrade bool // the client asks for a websocket upgrade
		want    int
		reason  string // the audited reason, when the request is denied
	}{
		{"garbage", start(answerGarbage, true), false, http.StatusBadGateway, ""},
		{"reset_mid_body", start(resetMidBody, true), false, truncated, ""},
		{"never_answers", start(neverAnswer, true), false, http.StatusBadGateway, ""},
		{"close_in_tls_handshake", start(closeInHandshake, false), false, http.StatusBadGateway, ""},
		{"unsolicited_101", start(switchUnasked("websocket"), true), false, closed, "unsolicited_upgrade"},
		{"mismatched_101", start(switchUnasked("h2c"), true), true, closed, "upgrade_mismatch"},
	}
	var ports []int
	for _, tc := range cases {
		ports = append(ports, tc.up.plain.port, tc.up.secure.port)
	}
	env := newHostileEnv(t, tlsCfg, cert, ports...)
	check := leakCheck(t, env.tp)
	for _, m := range hostileModes {
		t.Run(m.name, func(t *testing.T) {
			for _, tc := range cases {
				if tc.name == "close_in_tls_handshake" && !m.mode.upstreamTLS() {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					up := tc.up.plain
					if m.mode.upstreamTLS() {
						up = tc.up.secure
					}
					// Intercepted, the proxy completes TLS with the client
					// before it dials TLS upstream: a 502 arrives inside it.
					c := dialHostile(t, env, m.mode, up.port)
					path := fmt.Sprintf("/%s/%s", m.name, tc.name)
					headers := ""
					if tc.upgrade {
						headers = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
					}
					begin := time.Now()
					c.send("GET " + c.uri(path) + " HTTP/1.1\r\nHost: " + c.target + "\r\n" + headers + "\r\n")
					status, body, bodyErr := c.outcome()
					switch {
					case tc.want == truncated:
						if status != http.StatusOK || bodyErr == nil {
							t.Errorf("status %d, body error %v; want a 200 whose body breaks off", status, bodyErr)
						}
						c.wantClosed(hostileWait)
					case status != tc.want:
						t.Errorf("status %d (body %.200q), want %d", status, body, tc.want)
					}
					if status == 0 {
						c.wantClosed(hostileWait)
					}
					if d := time.Since(begin); d > 6*time.Second {
						t.Errorf("took %v", d)
					}
					if tc.reason == "" {
						return
					}
					e := env.tp.waitAudit(t, "deny for "+path, func(e audit.Event) bool {
						return e.Event == audit.EventRequest && e.Path == path
					})
					if e.Decision != audit.DecisionDeny || e.Reason != tc.reason {
						t.Errorf("audited %s/%s, want deny/%s", e.Decision, e.Reason, tc.reason)
					}
				})
			}
		})
	}
	// Every request the proxy answered or refused is in the audit log.
	for _, e := range eventsOf(env.tp.events(t), audit.EventRequest) {
		if e.Status == 0 && e.Decision != audit.DecisionDeny {
			t.Errorf("request audited with no status: %+v", e)
		}
	}
	check()
}

// leakCheck records the goroutines and fds of the test process now and
// returns a check, for the end of the test, that they are back to that
// baseline once the clients are gone (pooled splice pipes do not count).
func leakCheck(t *testing.T, proxies ...*testProxy) func() {
	t.Helper()
	if runtime.GOOS != "linux" {
		return func() {}
	}
	settle := func() {
		// The pipes that splice TCP to TCP are pooled and closed by a
		// finalizer once the pool lets go of them: two GCs do that.
		runtime.GC()
		runtime.GC()
	}
	settle()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	return func() {
		t.Helper()
		const slack = 2
		var g, fd int
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			settle()
			g, fd = runtime.NumGoroutine(), openFDs(t)
			if g <= g0+slack && fd <= fd0+slack {
				return
			}
			if time.Now().After(deadline) {
				break
			}
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Logf("goroutines:\n%s", relayStacks(buf))
		t.Errorf("after the test: %d goroutines (baseline %d), %d fds (baseline %d)", g, g0, fd, fd0)
	}
}

// switchAndEcho answers an upgrade request with the 101 it asked for and
// echoes every byte after it.
func switchAndEcho(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
	req, err := u.readRequest(r)
	if err != nil {
		return
	}
	fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", req.Header.Get("Upgrade"))
	_, _ = io.Copy(c, r)
}

// TestForwardUpgradeOverTLS: an upgrade asked for with an https:// (or
// wss://) absolute URI on the forward path reaches the upstream over
// verified TLS, as every other https:// request does; the request, with
// its headers, never crosses the network in clear text.
func TestForwardUpgradeOverTLS(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	secure := startHostileUpstream(t, tlsCfg, switchAndEcho)
	firstBytes := make(chan []byte, 1)
	cleartext := startHostileUpstream(t, nil, func(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
		b, _ := r.Peek(4)
		firstBytes <- slices.Clone(b)
	})
	env := newHostileEnv(t, tlsCfg, cert, secure.port, cleartext.port)
	upgrade := func(port int, scheme string) *hostileClient {
		c := dialHostile(t, env, modeForward, port)
		c.send(fmt.Sprintf("GET %s://127.0.0.1:%d/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"+
			"Authorization: Bearer secret-token\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", scheme, port, port))
		return c
	}

	t.Run("upstream_speaks_tls", func(t *testing.T) {
		c := upgrade(secure.port, "https")
		_ = c.tcp.SetReadDeadline(time.Now().Add(hostileWait))
		resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodGet})
		if err != nil {
			c.failOnHang(err)
			t.Fatalf("no response: %v", err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			t.Fatalf("status %d (%s), want 101 from the TLS upstream", resp.StatusCode, b)
		}
		_, _ = io.WriteString(c.conn, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(c.r, b); err != nil || string(b) != "ping" {
			t.Errorf("echo after the switch: %q, %v", b, err)
		}
	})

	t.Run("never_cleartext", func(t *testing.T) {
		c := upgrade(cleartext.port, "wss")
		select {
		case b := <-firstBytes:
			if len(b) == 0 || b[0] != 0x16 {
				t.Errorf("the upstream of a wss:// request got %q first, want a TLS ClientHello (0x16)", b)
			}
		case <-time.After(hostileWait):
			t.Fatal("the proxy never connected upstream")
		}
		_, _, _ = c.outcome()
	})
}

// hopRequestHeaders are hop-by-hop and proxy headers a client sends; none
// may reach the upstream (RFC 9110 7.6.1), X-Keep must.
const hopRequestHeaders = "Connection: X-Secret, Keep-Alive\r\nX-Secret: s3cret\r\nKeep-Alive: timeout=5\r\n" +
	"Proxy-Authorization: Basic b3NhbmRib3g6c2VjcmV0\r\nProxy-Connection: keep-alive\r\n" +
	"Proxy-Authenticate: Basic realm=client\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Keep: yes\r\n"

// hopStripped are the request headers the upstream must not see.
var hopStripped = []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection",
	"Proxy-Authenticate", "Te", "Trailer", "Upgrade"}

// answerWithHopHeaders records each request's headers and answers with
// hop-by-hop headers of its own, which the client must not see.
func answerWithHopHeaders(seen chan<- http.Header) hostileHandler {
	return func(u *hostileUpstream, c net.Conn, r *bufio.Reader) {
		for {
			req, err := u.readRequest(r)
			if err != nil {
				return
			}
			seen <- req.Header
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\n"+
				"Keep-Alive: timeout=9\r\nProxy-Authenticate: Basic realm=\"upstream\"\r\nProxy-Connection: keep-alive\r\n"+
				"Upgrade: h2c\r\nX-Visible: 1\r\nContent-Length: 2\r\n\r\nok")
		}
	}
}

// TestHopByHopHeaders: on every mode, the hop-by-hop headers of a request,
// those its Connection header names and every Proxy-* header stop at the
// proxy; so do those of the response.
func TestHopByHopHeaders(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	seen := make(chan http.Header, 1)
	plain := startHostileUpstream(t, nil, answerWithHopHeaders(seen))
	secure := startHostileUpstream(t, tlsCfg, answerWithHopHeaders(seen))
	env := newHostileEnv(t, tlsCfg, cert, plain.port, secure.port)
	for _, m := range hostileModes {
		t.Run(m.name, func(t *testing.T) {
			up := plain
			if m.mode.upstreamTLS() {
				up = secure
			}
			c := dialHostile(t, env, m.mode, up.port)
			c.send("GET " + c.uri("/hop") + " HTTP/1.1\r\nHost: " + c.target + "\r\n" + hopRequestHeaders + "\r\n")
			_ = c.tcp.SetReadDeadline(time.Now().Add(hostileWait))
			resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodGet})
			if err != nil {
				c.failOnHang(err)
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var h http.Header
			select {
			case h = <-seen:
			case <-time.After(hostileWait):
				t.Fatal("the upstream saw no request")
			}
			for _, name := range hopStripped {
				if v, ok := h[name]; ok {
					t.Errorf("upstream got %s: %q", name, v)
				}
			}
			if h.Get("X-Keep") != "yes" {
				t.Errorf("upstream lost X-Keep: %v", h)
			}
			for _, name := range []string{"X-Internal", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Upgrade"} {
				if v, ok := resp.Header[name]; ok {
					t.Errorf("client got the upstream's hop-by-hop %s: %q", name, v)
				}
			}
			if strings.Contains(strings.ToLower(resp.Header.Get("Connection")), "x-internal") {
				t.Errorf("client got Connection: %q", resp.Header.Get("Connection"))
			}
			if resp.Header.Get("X-Visible") != "1" {
				t.Errorf("client lost X-Visible: %v", resp.Header)
			}
		})
	}
}

// TestHugeResponseHead: an upstream whose response head never ends (8 MiB
// of one header line) gets the client a 502, as a head over the
// transport's 1 MiB limit does on the forward path, however quickly the
// upstream sends it: the proxy does not buffer a head without bound.
func TestHugeResponseHead(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	plain := startHostileUpstream(t, nil, hugeResponseHead)
	secure := startHostileUpstream(t, tlsCfg, hugeResponseHead)
	ca, err := NewCA("hostile", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	limits := hostileLimits
	limits.ResponseTimeout = 20 * time.Second // only the size limit may end it
	tp := startProxy(t, hostilePolicy(plain.port, secure.port), func(c *Config) {
		c.CA, c.Limits = ca, limits
		c.UpstreamCAs = x509.NewCertPool()
		c.UpstreamCAs.AddCert(cert)
	})
	env := &hostileEnv{tp: tp, ca: ca, tlsCfg: tlsCfg}
	for _, m := range hostileModes {
		t.Run(m.name, func(t *testing.T) {
			up := plain
			if m.mode.upstreamTLS() {
				up = secure
			}
			c := dialHostile(t, env, m.mode, up.port)
			c.send("GET " + c.uri("/huge") + " HTTP/1.1\r\nHost: " + c.target + "\r\n\r\n")
			if status, body, _ := c.outcome(); status != http.StatusBadGateway {
				t.Errorf("status %d (body %.100q), want 502", status, body)
			}
		})
	}
}

// TestInspectionEndsAtSwitch documents a limit (SECURITY.md): the request
// that asks for an upgrade is decided, but after the 101 the bytes are
// relayed untouched. A request the policy denies, written after the
// switch, reaches the upstream as plain bytes and is not audited.
func TestInspectionEndsAtSwitch(t *testing.T) {
	tlsCfg, cert := hostileCert(t)
	plain := startHostileUpstream(t, nil, switchAndEcho)
	secure := startHostileUpstream(t, tlsCfg, switchAndEcho)
	env := newHostileEnv(t, tlsCfg, cert, plain.port, secure.port)
	for _, m := range hostileModes {
		t.Run(m.name, func(t *testing.T) {
			up := plain
			if m.mode.upstreamTLS() {
				up = secure
			}
			c := dialHostile(t, env, m.mode, up.port)
			if _, err := io.WriteString(c.conn, "GET "+c.uri("/ws")+" HTTP/1.1\r\nHost: "+c.target+
				"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodGet})
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			denied := "GET /admin/secret HTTP/1.1\r\nHost: " + c.target + "\r\n\r\n"
			if _, err := io.WriteString(c.conn, denied); err != nil {
				t.Fatal(err)
			}
			back := make([]byte, len(denied))
			if _, err := io.ReadFull(c.r, back); err != nil || string(back) != denied {
				t.Errorf("after the switch the upstream echoed %q, %v; want the denied request, untouched", back, err)
			}
		})
	}
	for _, e := range eventsOf(env.tp.events(t), audit.EventRequest) {
		if strings.HasPrefix(e.Path, "/admin") {
			t.Errorf("bytes after the switch were audited as a request: %+v", e)
		}
	}
}
