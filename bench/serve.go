package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// benchHost is the name the TLS server's certificate is for; clients and
// relays pin it to 127.0.0.1.
const benchHost = "bench.test"

// serverInfo is what `osbench serve` prints: where each origin listens.
type serverInfo struct {
	// HTTP serves GET /bytes?n=N (N bytes), GET /small (128 bytes) and a
	// WebSocket echo at /echo.
	HTTP string `json:"http"`
	// HTTPS serves /small over TLS as benchHost, HTTP/1.1 only.
	HTTPS string `json:"https"`
	// Echo is a raw TCP echo server.
	Echo string `json:"echo"`
	// CertFile is the HTTPS server's self-signed certificate (PEM).
	CertFile string `json:"cert_file"`
}

// serveMain runs the origin servers until stdin closes. They live in their
// own process so that a profile of the proxy holds the proxy alone.
func serveMain(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", os.TempDir(), "where to write the TLS certificate")
	_ = fs.Parse(args)
	if _, _, err := raiseNoFile(); err != nil {
		return err
	}
	cert, err := selfSigned(*dir)
	if err != nil {
		return err
	}
	info := serverInfo{CertFile: filepath.Join(*dir, "server.pem")}

	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", serveBytes)
	mux.HandleFunc("/small", serveSmall)
	mux.HandleFunc("/echo", serveWSEcho)

	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = (&http.Server{Handler: mux}).Serve(httpLn) }()
	info.HTTP = httpLn.Addr().String()

	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tlsSrv := &http.Server{Handler: mux, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"},
	}}
	go func() { _ = tlsSrv.Serve(tls.NewListener(tlsLn, tlsSrv.TLSConfig)) }()
	info.HTTPS = tlsLn.Addr().String()

	echoLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go serveEcho(echoLn)
	info.Echo = echoLn.Addr().String()

	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		return err
	}
	waitStdin(bufio.NewReader(os.Stdin))
	return nil
}

// payload is what /bytes sends, over and over.
var payload = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want ?n=BYTES", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	for n > 0 {
		k := min(n, int64(len(payload)))
		if _, err := w.Write(payload[:k]); err != nil {
			return
		}
		n -= k
	}
}

// smallBody is the answer to /small: a small API response.
var smallBody = payload[:128]

func serveSmall(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(smallBody)))
	_, _ = w.Write(smallBody)
}

// serveWSEcho echoes every message back, streaming it (never buffering a
// whole message), until the client goes away.
func serveWSEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	ctx := context.Background()
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			return
		}
		wr, err := c.Writer(ctx, typ)
		if err != nil {
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			return
		}
		if err := wr.Close(); err != nil {
			return
		}
	}
}

// serveEcho is a raw TCP echo server with a small buffer per connection
// (not io.Copy: a splice would hold a pipe per connection, and the scale
// scenario opens thousands).
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: back off
			continue
		}
		go echoConn(c)
	}
}

func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// selfSigned makes the HTTPS server's certificate for benchHost and
// 127.0.0.1 and writes it to dir/server.pem, for --upstream-ca and clients.
func selfSigned(dir string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: benchHost},
		DNSNames:              []string{benchHost},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), pemBytes, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("write certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
