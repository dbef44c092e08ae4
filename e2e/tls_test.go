package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/osandbox/osandbox/audit"
)

// Names the TLS tests pin to 127.0.0.1 with --resolve. They are in a
// reserved TLD, so no lookup of them could ever leave the machine.
const (
	apiHost   = "api.e2e.test"   // has http rules: intercepted
	blindHost = "blind.e2e.test" // no http rules: a blind tunnel
)

// uriServer is an HTTPS server on 127.0.0.1 that answers every request
// with "METHOD REQUEST-URI" and remembers the request-targets it got.
type uriServer struct {
	port    int
	certPEM string // its self-signed certificate, for --upstream-ca or --cacert

	mu   sync.Mutex
	uris []string
}

func newURIServer(t *testing.T, host string) *uriServer {
	t.Helper()
	s := &uriServer{}
	s.port, s.certPEM = serveTLS(t, host, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.uris = append(s.uris, r.Method+" "+r.RequestURI)
		s.mu.Unlock()
		fmt.Fprintf(w, "%s %s", r.Method, r.RequestURI)
	}))
	return s
}

func (s *uriServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.uris...)
}

// serveTLS serves h over TLS on 127.0.0.1 with a self-signed certificate
// for host, until the test ends.
func serveTLS(t *testing.T, host string, h http.Handler) (port int, certPEM string) {
	t.Helper()
	cert, certPEM := selfSigned(t, host)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = loopbackListener(t)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// Clients that refuse the certificate on purpose would fill the log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, certPEM
}

// issuerLine finds what `curl -v` says about the server certificate's issuer.
var issuerLine = regexp.MustCompile(`(?m)^\*\s+issuer: (.*)$`)

// issuer is the issuer curl -v logged to the file at path.
func issuer(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := issuerLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("curl -v logged no issuer:\n%s", b)
	}
	return string(m[1])
}

// readFile reads a file the command left in the scratch directory.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInterceptedHTTPS: curl inside the sandbox reaches an HTTPS server
// whose host has http rules. The proxy intercepts TLS with a leaf of the
// run CA, which curl trusts through CURL_CA_BUNDLE: the allowed GET gets
// 200, the POST no rule allows gets the 403 JSON, and each request is
// audited (proto https) without its query string.
func TestInterceptedHTTPS(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newURIServer(t, apiHost)
		policy := sb.file(t, "policy.yaml", fmt.Sprintf(`version: 1
allow:
  - name: api-read
    hosts: [%s]
    ports: [%d]
    http:
      - methods: [GET]
        paths: ["/repos/**"]
allow_private: [127.0.0.1/32]
`, apiHost, srv.port))
		upstreamCA := sb.file(t, "upstream.pem", srv.certPEM)
		base := fmt.Sprintf("https://%s:%d", apiHost, srv.port)
		script := fmt.Sprintf(`curl -sS -v -i --suppress-connect-headers -o get.out '%[1]s/repos/x?token=s3cret' 2>get.err &&
curl -sS -i --suppress-connect-headers -o post.out -d data '%[1]s/repos/x?token=s3cret'`, base)
		r := sb.run(t, []string{"--policy", policy, "--resolve", apiHost + ":127.0.0.1", "--upstream-ca", upstreamCA},
			"sh", "-c", script)
		r.wantCode(t, 0)

		resp, text := parseResponse(t, readFile(t, sb.path("get.out")))
		if resp.StatusCode != 200 || text != "GET /repos/x?token=s3cret" {
			t.Errorf("GET: %d %q", resp.StatusCode, text)
		}
		if iss := issuer(t, sb.path("get.err")); !strings.Contains(iss, "osandbox") {
			t.Errorf("curl saw a certificate issued by %q, want the osandbox run CA", iss)
		}
		wantDenial(t, readFile(t, sb.path("post.out")), denialBody{
			Error: "policy_denied", Reason: "no_matching_rule", Method: "POST",
			Host: apiHost, Port: srv.port, Path: "/repos/x",
		})
		if got := srv.seen(); len(got) != 1 {
			t.Errorf("server got %q, want only the GET", got)
		}

		dst := fmt.Sprintf("127.0.0.1:%d", srv.port)
		connect := decision{Event: audit.EventConnect, Decision: audit.DecisionAllow, Reason: "rule_allow",
			Rule: "api-read", Proto: audit.ProtoConnect, Method: "CONNECT", Host: apiHost, Port: srv.port,
			Status: 200, Dst: dst}
		r.wantDecisions(t,
			connect,
			decision{Event: audit.EventRequest, Decision: audit.DecisionAllow, Reason: "rule_allow", Rule: "api-read",
				Proto: audit.ProtoHTTPS, Method: "GET", Host: apiHost, Port: srv.port, Path: "/repos/x", Status: 200, Dst: dst},
			connect,
			decision{Event: audit.EventRequest, Decision: audit.DecisionDeny, Reason: "no_matching_rule",
				Proto: audit.ProtoHTTPS, Method: "POST", Host: apiHost, Port: srv.port, Path: "/repos/x", Status: 403, Dst: dst},
		)
		for _, e := range r.decisions() {
			if line, _ := json.Marshal(e.fields); strings.Contains(string(line), "s3cret") {
				t.Errorf("the query string reached the audit log: %s", line)
			}
		}
	})
}

// TestInterceptedTraversal: the policy allows GET below /repos and denies
// /admin; requests whose raw path differs from its normalised form are
// decided on the normalised one (curl --path-as-is sends them verbatim),
// and "%2F" is never a separator.
func TestInterceptedTraversal(t *testing.T) {
	// reason is how the normalised path is decided: below /admin the deny
	// rule wins; outside /repos no rule matches.
	cases := []struct {
		raw, path, reason string // as sent; as decided and audited; why
	}{
		{"/repos/../admin", "/admin", "rule_deny"},
		{"/repos/%2e%2e/admin", "/admin", "rule_deny"},
		{"/repos/%2E%2E/admin/users", "/admin/users", "rule_deny"},
		{"/repos/.%2e/admin", "/admin", "rule_deny"},
		{"/repos//..//admin", "/admin", "rule_deny"},
		{"/repos/x/%2e/../../admin", "/admin", "rule_deny"},
		{"/repos/../../../etc/passwd", "/etc/passwd", "no_matching_rule"},
		{"/repos/a%2Fb", "/repos/a%2Fb", "rule_allow"},
		{"/repos/%2e%2e%2Fadmin", "/repos/..%2Fadmin", "rule_allow"},
		{"/repos/%7Euser/./x", "/repos/~user/x", "rule_allow"},
	}
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		srv := newURIServer(t, apiHost)
		policy := sb.file(t, "policy.yaml", fmt.Sprintf(`version: 1
allow:
  - name: repos
    hosts: [%[1]s]
    ports: [%[2]d]
    http:
      - methods: [GET]
        paths: ["/repos/**"]
deny:
  - name: no-admin
    hosts: [%[1]s]
    ports: [%[2]d]
    http:
      - methods: ["*"]
        paths: ["/admin/**"]
allow_private: [127.0.0.1/32]
`, apiHost, srv.port))
		upstreamCA := sb.file(t, "upstream.pem", srv.certPEM)
		var script strings.Builder
		for _, c := range cases {
			fmt.Fprintf(&script, "curl -sS --path-as-is -o /dev/null -w '%%{http_code}\\n' 'https://%s:%d%s'\n", apiHost, srv.port, c.raw)
		}
		r := sb.run(t, []string{"--policy", policy, "--resolve", apiHost + ":127.0.0.1", "--upstream-ca", upstreamCA},
			"sh", "-c", script.String())
		r.wantCode(t, 0)

		codes := strings.Fields(r.stdout)
		requests := r.only(audit.EventRequest)
		if len(codes) != len(cases) || len(requests) != len(cases) {
			t.Fatalf("%d status codes %q and %d request events, want %d each\nstderr:\n%s\naudit:\n%s",
				len(codes), codes, len(requests), len(cases), r.stderr, r.dump())
		}
		var wantSeen []string
		for i, c := range cases {
			e := requests[i]
			code, dec := "403", audit.DecisionDeny
			if c.reason == "rule_allow" {
				code, dec = "200", audit.DecisionAllow
				wantSeen = append(wantSeen, "GET "+c.raw)
			}
			if codes[i] != code {
				t.Errorf("%s: status %s, want %s", c.raw, codes[i], code)
			}
			rule := map[string]string{"rule_deny": "no-admin", "rule_allow": "repos"}[c.reason]
			if e.Path != c.path || e.Decision != dec || e.Reason != c.reason || e.Rule != rule || e.Proto != audit.ProtoHTTPS {
				t.Errorf("%s: audited %s %s by %q, path %s (proto %s); want %s %s by %q, path %s",
					c.raw, e.Decision, e.Reason, e.Rule, e.Path, e.Proto, dec, c.reason, rule, c.path)
			}
		}
		if got := srv.seen(); strings.Join(got, "\n") != strings.Join(wantSeen, "\n") {
			t.Errorf("server got %q, want %q (the raw request-targets of the allowed requests)", got, wantSeen)
		}
	})
}

// TestBlindTunnelUntouched: in a run that intercepts one host, a host
// whose rule has no http is tunnelled blind: curl sees the server's own
// certificate, verifies it against that certificate alone, and the run
// CA (in CURL_CA_BUNDLE) does not vouch for it. The audit has the CONNECT
// and its close, no request.
func TestBlindTunnelUntouched(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		api := newURIServer(t, apiHost)
		blind := newURIServer(t, blindHost)
		policy := sb.file(t, "policy.yaml", fmt.Sprintf(`version: 1
allow:
  - name: api
    hosts: [%s]
    ports: [%d]
    http:
      - methods: [GET]
  - name: blind
    hosts: [%s]
    ports: [%d]
allow_private: [127.0.0.1/32]
`, apiHost, api.port, blindHost, blind.port))
		upstreamCA := sb.file(t, "upstream.pem", api.certPEM)
		serverCert := sb.file(t, "blind.pem", blind.certPEM)
		blindURL := fmt.Sprintf("https://%s:%d/plain", blindHost, blind.port)
		script := strings.Join([]string{
			// The run CA is what curl trusts by default here: the blind host's
			// own certificate must not verify against it.
			fmt.Sprintf("curl -sS -o /dev/null '%s' 2>default.err; echo $? >default.code", blindURL),
			fmt.Sprintf("curl -sS -v --cacert %s '%s' 2>blind.err", serverCert, blindURL),
		}, "\n")
		r := sb.run(t, []string{"--policy", policy, "--upstream-ca", upstreamCA,
			"--resolve", apiHost + ":127.0.0.1", "--resolve", blindHost + ":127.0.0.1"}, "sh", "-c", script)
		r.wantCode(t, 0)
		if r.stdout != "GET /plain" {
			t.Errorf("body %q, want %q", r.stdout, "GET /plain")
		}
		if iss := issuer(t, sb.path("blind.err")); !strings.Contains(iss, "CN="+blindHost) || strings.Contains(iss, "osandbox") {
			t.Errorf("curl saw a certificate issued by %q, want the server's own (CN=%s)", iss, blindHost)
		}
		if code := strings.TrimSpace(readFile(t, sb.path("default.code"))); code != "60" {
			t.Errorf("curl trusting only the run's bundle exited %s, want 60 (peer certificate cannot be verified)\n%s",
				code, readFile(t, sb.path("default.err")))
		}
		if got := r.only(audit.EventRequest, audit.EventUpgrade); len(got) != 0 {
			t.Errorf("a blind tunnel has request events:\n%s", r.dump())
		}
		for _, e := range r.only(audit.EventConnect) {
			if e.Decision != audit.DecisionAllow || e.Rule != "blind" || e.Host != blindHost {
				t.Errorf("connect audited as %+v", decisionOf(e))
			}
		}
		if n := len(r.only(audit.EventConnect)); n != 2 || len(r.only(audit.EventClose)) != 2 {
			t.Errorf("want 2 connects and 2 closes; audit:\n%s", r.dump())
		}
		if got := blind.seen(); len(got) != 1 {
			t.Errorf("server got %q, want one GET", got)
		}
	})
}

// TestCAFiles: with a policy that intercepts, the command finds the run
// CA where common clients look: a bundle of the system roots plus the CA
// for SSL_CERT_FILE, CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE and GIT_SSL_CAINFO,
// the CA alone for NODE_EXTRA_CA_CERTS and DENO_CERT. No private key is
// on disk, and the files are gone once the run ends.
func TestCAFiles(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		policy := sb.file(t, "policy.yaml", "version: 1\nallow:\n  - name: api\n    hosts: [api.e2e.test]\n    http:\n      - methods: [GET]\n")
		script := `for v in SSL_CERT_FILE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE GIT_SSL_CAINFO NODE_EXTRA_CA_CERTS DENO_CERT; do
  eval "echo $v=\$$v"
done >env.txt
cat "$SSL_CERT_FILE" >bundle.copy
cat "$NODE_EXTRA_CA_CERTS" >ca.copy
cat "$(dirname "$SSL_CERT_FILE")"/* "$(dirname "$NODE_EXTRA_CA_CERTS")"/* >all.copy`
		r := sb.run(t, []string{"--policy", policy}, "sh", "-c", script)
		r.wantCode(t, 0)
		env := map[string]string{}
		for _, line := range strings.Fields(readFile(t, sb.path("env.txt"))) {
			k, v, _ := strings.Cut(line, "=")
			env[k] = v
		}
		bundle, caFile := env["SSL_CERT_FILE"], env["NODE_EXTRA_CA_CERTS"]
		for _, k := range []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO"} {
			if env[k] == "" || env[k] != bundle {
				t.Errorf("%s=%q, want the bundle (SSL_CERT_FILE=%q)", k, env[k], bundle)
			}
		}
		for _, k := range []string{"NODE_EXTRA_CA_CERTS", "DENO_CERT"} {
			if env[k] == "" || env[k] != caFile || env[k] == bundle {
				t.Errorf("%s=%q, want the CA alone", k, env[k])
			}
		}
		ca := pemCerts(t, readFile(t, sb.path("ca.copy")))
		if len(ca) != 1 || !ca[0].IsCA || !strings.Contains(ca[0].Subject.String(), "osandbox") {
			t.Fatalf("the CA file holds %d certificates; want the osandbox run CA alone", len(ca))
		}
		var inBundle bool
		for _, c := range pemCerts(t, readFile(t, sb.path("bundle.copy"))) {
			inBundle = inBundle || c.Equal(ca[0])
		}
		if !inBundle {
			t.Errorf("the bundle lacks the run CA")
		}
		if all := readFile(t, sb.path("all.copy")); strings.Contains(all, "PRIVATE KEY") {
			t.Errorf("a private key is on disk next to the CA certificate")
		}
		for _, f := range []string{bundle, caFile} {
			if _, err := os.Stat(f); !os.IsNotExist(err) {
				t.Errorf("%s still exists after the run (%v)", f, err)
			}
		}
	})
}

// pemCerts parses every certificate in a PEM bundle.
func pemCerts(t *testing.T, data string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(data)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("bundle: %v", err)
		}
		out = append(out, c)
	}
}
