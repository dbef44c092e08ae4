// Command wsclient is the e2e tests' WebSocket client: run inside
// osandbox, it dials a ws:// or wss:// URL the way an ordinary Go program
// does (the default transport, so the proxy variables and SSL_CERT_FILE of
// its environment apply), echoes text, binary and a 1 MiB message, and
// closes normally. It prints one line per echo and exits non-zero on the
// first failure. It is a test helper, not a tool.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/coder/websocket"
)

func main() {
	cacert := flag.String("cacert", "", "trust the certificates in this PEM `file` too (for a server the proxy does not intercept)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wsclient [-cacert FILE] ws[s]://HOST:PORT/PATH")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *cacert); err != nil {
		fmt.Fprintln(os.Stderr, "wsclient:", err)
		os.Exit(1)
	}
}

func run(url, cacert string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := http.DefaultClient
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return err
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificates", cacert)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone() // keeps ProxyFromEnvironment
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
		client = &http.Client{Transport: tr}
	}
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial %s: %w (status %d)", url, err, resp.StatusCode)
		}
		return fmt.Errorf("dial %s: %w", url, err)
	}
	defer c.CloseNow()
	c.SetReadLimit(2 << 20)
	large := make([]byte, 1<<20)
	if _, err := rand.Read(large); err != nil {
		return err
	}
	small := make([]byte, 256)
	if _, err := rand.Read(small); err != nil {
		return err
	}
	for _, m := range []struct {
		name string
		typ  websocket.MessageType
		data []byte
	}{
		{"text", websocket.MessageText, []byte("hello through osandbox")},
		{"binary", websocket.MessageBinary, small},
		{"1MiB", websocket.MessageBinary, large},
	} {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			return fmt.Errorf("write %s: %w", m.name, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", m.name, err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			return fmt.Errorf("%s: echo differs (type %v, %d bytes, want %v, %d bytes)", m.name, typ, len(got), m.typ, len(m.data))
		}
		fmt.Printf("%s ok\n", m.name)
	}
	return c.Close(websocket.StatusNormalClosure, "done")
}
