package proxy

// TLS interception (inspect.go, ca.go) seen from a client that opens the
// CONNECT by hand: the request loop inside intercepted TLS and inside a
// plain inspected tunnel, the per-run CA and its cached leaves, and
// upstream verification. The helpers here are shared with smuggle_test.go.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/osandbox/osandbox/audit"
)

// mitmHost is the name the tests CONNECT to. The proxy pins it to
// 127.0.0.1, and httptest's TLS certificate is valid for it (and for
// *.example.com), not for unnamedHost, which is pinned too.
const (
	mitmHost    = "example.com"
	unnamedHost = "example.net"
)

// mitmTimeout bounds every read and write of these tests.
const mitmTimeout = 10 * time.Second

// mitmUpstream is an httptest server (TLS or plain) on 127.0.0.1 that
// records each request and answers "METHOD URI BODY".
type mitmUpstream struct {
	*httptest.Server
	port int
	hits atomic.Int64

	mu   sync.Mutex
	seen []mitmSeen
}

type mitmSeen struct {
	method, uri, host, body, alpn string
}

func startMITMUpstream(t *testing.T, useTLS bool) *mitmUpstream {
	t.Helper()
	u := &mitmUpstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the tests break on purpose
	if useTLS {
		u.StartTLS()
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	u.port = u.Listener.Addr().(*net.TCPAddr).Port
	return u
}

func (u *mitmUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return // a body that broke its framing gets no answer
	}
	s := mitmSeen{method: r.Method, uri: r.RequestURI, host: r.Host, body: string(b)}
	if r.TLS != nil {
		s.alpn = r.TLS.NegotiatedProtocol
	}
	u.mu.Lock()
	u.seen = append(u.seen, s)
	u.mu.Unlock()
	fmt.Fprintf(w, "%s %s %s", r.Method, r.RequestURI, b)
}

func (u *mitmUpstream) requests() []mitmSeen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]mitmSeen(nil), u.seen...)
}

// mitmPolicy inspects mitmHost:port: any GET or POST is allowed, except
// below /admin, which a deny rule refuses.
func mitmPolicy(port int) string {
	return fmt.Sprintf(`version: 1
allow:
  - name: inspected
    hosts: [%[1]s, www.%[1]s, %[3]s]
    ports: [%[2]d]
    http:
      - methods: [GET, POST]
        paths: ["/**"]
deny:
  - name: no-admin
    hosts: [%[1]s]
    ports: [%[2]d]
    http:
      - methods: ["*"]
        paths: ["/admin/**"]
allow_private: [127.0.0.1/32]
`, mitmHost, port, unnamedHost)
}

// startMITMProxy serves policy with a fresh CA, mitmPolicy's hosts pinned
// to 127.0.0.1, and upstream TLS trusting only the given
// certificates (none: the system roots).
func startMITMProxy(t *testing.T, policy string, upstreamCAs ...*x509.Certificate) (*testProxy, *CA) {
	t.Helper()
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	tp := startProxy(t, policy, func(c *Config) {
		c.CA = ca
		c.Pins = map[string][]netip.Addr{mitmHost: lo, "www." + mitmHost: lo, unnamedHost: lo}
		for _, cert := range upstreamCAs {
			if cert == nil {
				continue // a plain upstream has none
			}
			if c.UpstreamCAs == nil {
				c.UpstreamCAs = x509.NewCertPool()
			}
			c.UpstreamCAs.AddCert(cert)
		}
	})
	return tp, ca
}

// mitmConn is a client's view of an inspected tunnel: plain, or TLS that
// the proxy terminates.
type mitmConn struct {
	t     *testing.T
	conn  net.Conn // the TLS conn, or the TCP conn with buffered reads
	r     *bufio.Reader
	state tls.ConnectionState
}

// openInspected CONNECTs to host:port through tp and, with ca, starts TLS
// trusting ca alone; without, it speaks plain HTTP in the tunnel.
func openInspected(t *testing.T, tp *testProxy, ca *CA, host string, port int) *mitmConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", tp.Addr, mitmTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(mitmTimeout))
	target := fmt.Sprintf("%s:%d", host, port)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	mc := &mitmConn{t: t, conn: &bufConn{Conn: c, r: br}}
	if ca != nil {
		roots := x509.NewCertPool()
		roots.AddCert(ca.Certificate())
		tc := tls.Client(mc.conn, &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{"h2", "http/1.1"}})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake with the proxy for %s: %v", host, err)
		}
		mc.conn, mc.state = tc, tc.ConnectionState()
	}
	mc.r = bufio.NewReader(mc.conn)
	return mc
}

// bufConn reads through the reader that read the CONNECT response.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *mitmConn) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// response reads the next response to method and its whole body.
func (c *mitmConn) response(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.r, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// wantClosed fails unless the proxy ends the connection (EOF or reset)
// with nothing more to say.
func (c *mitmConn) wantClosed() {
	c.t.Helper()
	b, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after the refusal")
	}
	if len(b) > 0 {
		c.t.Errorf("after the refusal the proxy sent %q", b)
	}
}

// awaitRequest polls the audit log for the request event of method and
// path, which the proxy emits once the answer is on its way.
func awaitRequest(t *testing.T, tp *testProxy, method, path string) audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := tp.events(t)
		for _, e := range evs {
			if e.Event == audit.EventRequest && e.Method == method && e.Path == path {
				return e
			}
		}
		if time.Now().After(deadline) {
			for _, e := range evs {
				t.Logf("audit: %+v", e)
			}
			t.Fatalf("no request event for %s %s", method, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inspectModes are the two inspected tunnels: TLS the proxy intercepts,
// and plain HTTP.
var inspectModes = []struct {
	name  string
	tls   bool
	proto string
}{
	{"intercepted_tls", true, audit.ProtoHTTPS},
	{"plain_inspected", false, audit.ProtoHTTP},
}

// TestInterceptAllowAndDeny: inside intercepted TLS an allowed GET reaches
// the upstream (ALPN http/1.1 on both sides, query kept upstream but not in
// the audit), and a request a deny rule matches gets the 403 JSON and the
// connection closes.
func TestInterceptAllowAndDeny(t *testing.T) {
	up := startMITMUpstream(t, true)
	tp, ca := startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
	c := openInspected(t, tp, ca, mitmHost, up.port)
	if c.state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN with the client %q, want http/1.1", c.state.NegotiatedProtocol)
	}
	host := fmt.Sprintf("%s:%d", mitmHost, up.port)
	c.write("GET /ok?token=secret HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	resp, body := c.response(http.MethodGet)
	if resp.StatusCode != http.StatusOK || body != "GET /ok?token=secret " {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	c.write("POST /admin/users HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 2\r\n\r\nhi")
	resp, body = c.response(http.MethodPost)
	wantRefusal(t, resp, body, http.StatusForbidden, "policy_denied", "rule_deny")
	c.wantClosed()

	seen := up.requests()
	if len(seen) != 1 || seen[0].alpn != "http/1.1" || seen[0].host != host {
		t.Errorf("upstream saw %+v; want one request, ALPN http/1.1, Host %s", seen, host)
	}
	ok := awaitRequest(t, tp, http.MethodGet, "/ok")
	if ok.Decision != audit.DecisionAllow || ok.Proto != audit.ProtoHTTPS || ok.Status != 200 || ok.Rule != "inspected" {
		t.Errorf("GET audited as %+v", ok)
	}
	denied := awaitRequest(t, tp, http.MethodPost, "/admin/users")
	if denied.Decision != audit.DecisionDeny || denied.Reason != "rule_deny" || denied.Rule != "no-admin" ||
		denied.Proto != audit.ProtoHTTPS || denied.Status != 403 || denied.Conn != ok.Conn {
		t.Errorf("POST audited as %+v", denied)
	}
}

// TestInterceptLeafCached: two intercepted connections to one host get
// the very same leaf, signed by the run's CA for that host; another host
// gets its own. The CA is P-256, a CA, short-lived and named for osandbox.
func TestInterceptLeafCached(t *testing.T) {
	up := startMITMUpstream(t, true)
	tp, ca := startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
	var leaves [][]byte
	for range 2 {
		c := openInspected(t, tp, ca, mitmHost, up.port)
		leaves = append(leaves, c.state.PeerCertificates[0].Raw)
		c.conn.Close()
	}
	if string(leaves[0]) != string(leaves[1]) {
		t.Errorf("the second connection got another leaf than the first")
	}
	leaf, err := x509.ParseCertificate(leaves[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname(mitmHost); err != nil {
		t.Errorf("leaf: %v", err)
	}
	if err := leaf.CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Errorf("leaf is not signed by the run CA: %v", err)
	}
	ipLeaf, err := ca.leaf("127.0.0.1")
	if err != nil || ipLeaf.Leaf.VerifyHostname("127.0.0.1") != nil {
		t.Errorf("leaf for an IP target does not name the IP: %v", err)
	}
	other, err := ca.leaf("www." + mitmHost)
	if err != nil {
		t.Fatal(err)
	}
	if string(other.Certificate[0]) == string(leaves[0]) || other.Leaf.VerifyHostname("www."+mitmHost) != nil {
		t.Errorf("www.%s shares the leaf of %s or is not named in its own", mitmHost, mitmHost)
	}

	const validity = 24 * time.Hour // what sandbox asks for
	runCA, err := NewCA("r1", validity)
	if err != nil {
		t.Fatal(err)
	}
	cert := runCA.Certificate()
	key, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA %v, basic constraints %v, key usage %b", cert.IsCA, cert.BasicConstraintsValid, cert.KeyUsage)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > validity+10*time.Minute {
		t.Errorf("CA valid for %s, want at most %s and a little slack", life, validity)
	}
	if cert.NotAfter.After(time.Now().Add(validity + time.Minute)) {
		t.Errorf("CA valid until %s, more than %s from now", cert.NotAfter, validity)
	}
	if !strings.Contains(strings.ToLower(cert.Subject.String()), "osandbox") {
		t.Errorf("CA subject %q does not name osandbox", cert.Subject)
	}
	if !strings.Contains(string(runCA.CertPEM()), "BEGIN CERTIFICATE") || strings.Contains(string(runCA.CertPEM()), "PRIVATE") {
		t.Errorf("CertPEM is not the certificate alone:\n%s", runCA.CertPEM())
	}
}

// TestInterceptUpstreamUnverified: when the upstream's certificate does
// not verify (not trusted, or not for the name) the client gets a 502
// inside the intercepted TLS or a closed connection, and the upstream
// never sees a request.
func TestInterceptUpstreamUnverified(t *testing.T) {
	up := startMITMUpstream(t, true)
	if _, err := up.Certificate().Verify(x509.VerifyOptions{}); err == nil {
		t.Skip("the system roots trust httptest's certificate")
	}
	cases := []struct {
		name, host string
		trusted    bool
	}{
		{"untrusted", mitmHost, false},
		{"wrong_name", unnamedHost, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var tp *testProxy
			var ca *CA
			if tc.trusted {
				tp, ca = startMITMProxy(t, mitmPolicy(up.port), up.Certificate())
			} else {
				tp, ca = startMITMProxy(t, mitmPolicy(up.port))
			}
			c := openInspected(t, tp, ca, tc.host, up.port)
			_, werr := fmt.Fprintf(c.conn, "GET /secret HTTP/1.1\r\nHost: %s:%d\r\n\r\n", tc.host, up.port)
			resp, err := http.ReadResponse(c.r, &http.Request{Method: http.MethodGet})
			var ne net.Error
			switch {
			case err == nil:
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusBadGateway {
					t.Errorf("got %d %s, want 502", resp.StatusCode, b)
				}
				t.Logf("502 %s", b)
			case errors.As(err, &ne) && ne.Timeout():
				t.Errorf("no answer and no close: %v", err)
			default:
				t.Logf("connection closed without a 502 (write: %v, read: %v)", werr, err)
			}
			for _, e := range eventsOf(tp.events(t), audit.EventRequest) {
				if e.Decision != audit.DecisionDeny {
					t.Errorf("request audited as %+v", e)
				}
			}
		})
	}
	if n := up.hits.Load(); n != 0 {
		t.Errorf("upstream got %d requests, want none", n)
	}
}
