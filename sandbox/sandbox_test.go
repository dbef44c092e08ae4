package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/osandbox/osandbox/netns"
	"github.com/osandbox/osandbox/policies"
)

func TestCommandEnv(t *testing.T) {
	env := []string{"PATH=/bin", "http_proxy=http://evil:1", "HTTPS_PROXY=http://evil:2", "No_Proxy=*", "SSL_CERT_FILE=/x", "HOME=/h"}
	set := append(proxyEnv("http://127.0.0.1:3128"), "SSL_CERT_FILE=/bundle")
	got := commandEnv(env, set)
	for _, kv := range got {
		if strings.Contains(kv, "evil") || kv == "No_Proxy=*" || kv == "SSL_CERT_FILE=/x" {
			t.Errorf("the caller's %q survived", kv)
		}
	}
	for _, want := range []string{
		"PATH=/bin", "HOME=/h", "SSL_CERT_FILE=/bundle",
		"HTTP_PROXY=http://127.0.0.1:3128", "http_proxy=http://127.0.0.1:3128",
		"HTTPS_PROXY=http://127.0.0.1:3128", "https_proxy=http://127.0.0.1:3128",
		"ALL_PROXY=http://127.0.0.1:3128", "all_proxy=http://127.0.0.1:3128",
		"NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
}

func TestNeedsCA(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       bool
	}{
		{"default", "version: 1\n", false},
		{"connection rules only", "version: 1\nallow:\n  - hosts: [a.test]\n", false},
		{"allow with http", "version: 1\nallow:\n  - hosts: [a.test]\n    http:\n      - methods: [GET]\n", true},
		{"deny with http", "version: 1\ndeny:\n  - hosts: [a.test]\n    http:\n      - methods: [POST]\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policies.Parse([]byte(tc.yaml), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if got := needsCA(p); got != tc.want {
				t.Fatalf("needsCA = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTrustFiles(t *testing.T) {
	tr, err := newTrust("test")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(tr.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(ca) != string(tr.ca.CertPEM()) || strings.Contains(string(ca), "PRIVATE KEY") {
		t.Fatalf("CA file is not the CA certificate alone:\n%s", ca)
	}
	bundle, err := os.ReadFile(tr.bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(bundle)), strings.TrimSpace(string(ca))) {
		t.Fatal("bundle does not end with the CA")
	}
	if strings.Contains(string(bundle), "PRIVATE KEY") {
		t.Fatal("bundle holds a private key")
	}
	env := tr.env()
	for _, name := range []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO"} {
		if !slices.Contains(env, name+"="+tr.bundleFile) {
			t.Errorf("%s does not name the bundle: %q", name, env)
		}
	}
	for _, name := range []string{"NODE_EXTRA_CA_CERTS", "DENO_CERT"} {
		if !slices.Contains(env, name+"="+tr.caFile) {
			t.Errorf("%s does not name the CA: %q", name, env)
		}
	}
	tr.remove()
	if _, err := os.Stat(filepath.Dir(tr.caFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("trust directory left behind: %v", err)
	}
}

func TestLookPathStatuses(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		argv []string
		code int
	}{
		{"empty", nil, netns.ExitSetupFailed},
		{"missing", []string{"no-such-command-osandbox"}, netns.ExitNotFound},
		{"not executable", []string{plain}, netns.ExitNotExecutable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lookPath(tc.argv)
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != tc.code {
				t.Fatalf("lookPath(%q) = %v, want exit %d", tc.argv, err, tc.code)
			}
		})
	}
	if p, err := lookPath([]string{"sh"}); err != nil || !filepath.IsAbs(p) {
		t.Fatalf("lookPath(sh) = %q, %v", p, err)
	}
}
