package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
)

// CA is the per-run certificate authority that signs the leaf certificates
// of intercepted hosts. Its private key lives in memory only and dies with
// the run.
type CA struct {
	cert tls.Certificate
	pem  []byte
	sign func(host string, ctx *goproxy.ProxyCtx) (*tls.Config, error)
	ctx  *goproxy.ProxyCtx

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// NewCA generates an ECDSA P-256 CA named for osandbox and this run, valid
// from a little before now for validity.
func NewCA(runID string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("CA serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "osandbox run " + runID, Organization: []string{"osandbox per-run CA"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{
		cert:   tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pem:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		leaves: map[string]*tls.Certificate{},
	}
	// goproxy signs the leaves; it wants a context for its logging only.
	ca.sign = goproxy.TLSConfigFromCA(&ca.cert)
	ca.ctx = &goproxy.ProxyCtx{Proxy: goproxy.NewProxyHttpServer()}
	return ca, nil
}

// CertPEM is the CA certificate, PEM-encoded, for the command to trust.
func (ca *CA) CertPEM() []byte { return ca.pem }

// Certificate is the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert.Leaf }

// leaf returns the certificate for host, signing it on first use.
func (ca *CA) leaf(host string) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leaves[host]; ok {
		return c, nil
	}
	cfg, err := ca.sign(host, ca.ctx)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", host, err)
	}
	c := &cfg.Certificates[0]
	ca.leaves[host] = c
	return c, nil
}
