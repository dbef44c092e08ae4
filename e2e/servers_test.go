package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// greeting starts every body a test server sends.
const greeting = "hello from the e2e server"

// holdPath is where a test server holds a request open without answering
// until the client goes away.
const holdPath = "/hold"

// server is an httptest server on 127.0.0.1 that counts the requests it got.
type server struct {
	*httptest.Server
	port int
	hits atomic.Int64
	// held, if set, is a file the server creates once it holds a request:
	// a command in the sandbox can wait for it.
	held string
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	if r.URL.Path == holdPath {
		if s.held != "" {
			os.WriteFile(s.held, nil, 0o644)
		}
		select {
		case <-r.Context().Done():
		case <-time.After(runTimeout):
		}
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s: %s %s\n", greeting, r.Method, r.URL.Path)
}

// body is what the server answers to GET path.
func body(path string) string { return fmt.Sprintf("%s: GET %s\n", greeting, path) }

// newServer starts a plain HTTP server on 127.0.0.1.
func newServer(t *testing.T) *server {
	t.Helper()
	return startServer(t, &server{})
}

// newHoldingServer is newServer with held set.
func newHoldingServer(t *testing.T, held string) *server {
	t.Helper()
	return startServer(t, &server{held: held})
}

func startServer(t *testing.T, s *server) *server {
	t.Helper()
	s.Server = httptest.NewUnstartedServer(s)
	s.Listener.Close()
	s.Listener = loopbackListener(t)
	s.Start()
	t.Cleanup(s.Close)
	s.port = s.Listener.Addr().(*net.TCPAddr).Port
	return s
}

// newTLSServer starts an HTTPS server on 127.0.0.1 whose self-signed
// certificate names host; it returns the certificate as PEM, for --cacert.
func newTLSServer(t *testing.T, host string) (*server, string) {
	t.Helper()
	cert, certPEM := selfSigned(t, host)
	s := &server{}
	s.Server = httptest.NewUnstartedServer(s)
	s.Listener.Close()
	s.Listener = loopbackListener(t)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.StartTLS()
	t.Cleanup(s.Close)
	s.port = s.Listener.Addr().(*net.TCPAddr).Port
	return s, certPEM
}

// loopbackListener listens on 127.0.0.1 only: test traffic never leaves
// the machine.
func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// selfSigned makes a certificate for host that is its own CA.
func selfSigned(t *testing.T, host string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, string(certPEM)
}

// curl is the argv of a quiet curl that still reports its errors.
func curl(args ...string) []string { return append([]string{"curl", "-sS"}, args...) }

// parseResponse reads the response `curl -i` printed.
func parseResponse(t *testing.T, out string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
	if err != nil {
		t.Fatalf("curl output is not an HTTP response: %v\n%s", err, out)
	}
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, b.String()
}

// denialBody is the JSON a refused client gets (DESIGN 1.4).
type denialBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
	Method string `json:"method"`
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Path   string `json:"path"`
	Hint   string `json:"hint"`
}

// wantDenial checks a `curl -i` output is the 403 JSON denial of want
// (Hint is only required to be non-empty).
func wantDenial(t *testing.T, out string, want denialBody) {
	t.Helper()
	resp, text := parseResponse(t, out)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403\n%s", resp.StatusCode, out)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if h, w := resp.Header.Get("X-Osandbox-Decision"), "deny; reason="+want.Reason; h != w {
		t.Errorf("X-Osandbox-Decision %q, want %q", h, w)
	}
	var got denialBody
	if err := json.Unmarshal([]byte(text), &got); err != nil {
		t.Fatalf("denial body is not JSON: %v\n%s", err, text)
	}
	if got.Hint == "" {
		t.Errorf("denial body has no hint: %s", text)
	}
	got.Hint = want.Hint
	if got != want {
		t.Errorf("denial body\n got %+v\nwant %+v", got, want)
	}
}
