package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/osandbox/osandbox/policies"
	"github.com/osandbox/osandbox/proxy"
)

// caValidity bounds the per-run CA; a run that outlives it needs a restart.
const caValidity = 24 * time.Hour

// systemRootFiles are where distributions keep the system's CA bundle.
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",             // openSUSE
	"/etc/ssl/cert.pem",                  // Alpine, macOS
}

// trust is the run's CA and the files that hand it to the command.
type trust struct {
	ca         *proxy.CA
	dir        string
	caFile     string // our CA alone
	bundleFile string // system roots plus our CA
}

// needsCA reports whether any rule can make the proxy intercept TLS.
func needsCA(p *policies.Policy) bool {
	for _, rules := range [][]policies.Rule{p.Allow, p.Deny} {
		for _, r := range rules {
			if len(r.HTTP) > 0 {
				return true
			}
		}
	}
	return false
}

// newTrust generates the CA and writes its certificate, alone and in a
// bundle with the system roots, to a private directory the command can
// read. The key is never written.
func newTrust(runID string) (*trust, error) {
	ca, err := proxy.NewCA(runID, caValidity)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "osandbox-"+runID+"-")
	if err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	t := &trust{ca: ca, dir: dir, caFile: filepath.Join(dir, "ca.pem"), bundleFile: filepath.Join(dir, "bundle.pem")}
	bundle := append(systemRoots(), '\n')
	bundle = append(bundle, ca.CertPEM()...)
	if err := os.WriteFile(t.caFile, ca.CertPEM(), 0o644); err != nil {
		t.remove()
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	if err := os.WriteFile(t.bundleFile, bundle, 0o644); err != nil {
		t.remove()
		return nil, fmt.Errorf("write CA bundle: %w", err)
	}
	return t, nil
}

// systemRoots is the PEM bundle clients would use without us: the one
// SSL_CERT_FILE names, or the distribution's.
func systemRoots() []byte {
	files := systemRootFiles
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = append([]string{f}, files...)
	}
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
			return b
		}
	}
	return nil
}

// env is what common clients read to find trusted CAs.
func (t *trust) env() []string {
	return []string{
		"SSL_CERT_FILE=" + t.bundleFile,
		"CURL_CA_BUNDLE=" + t.bundleFile,
		"REQUESTS_CA_BUNDLE=" + t.bundleFile,
		"GIT_SSL_CAINFO=" + t.bundleFile,
		"NODE_EXTRA_CA_CERTS=" + t.caFile,
		"DENO_CERT=" + t.caFile,
	}
}

func (t *trust) remove() { os.RemoveAll(t.dir) }
