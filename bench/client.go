package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// client is one measurement, run as its own process: the same code runs
// direct, through the bare relay, and inside `osandbox run`.
type client struct {
	proxy    *url.URL // nil: direct
	pool     *x509.CertPool
	target   string // host:port for raw TCP scenarios
	url      string // URL for HTTP and WebSocket scenarios
	bytes    int64
	duration time.Duration
	warmup   time.Duration
	conns    int
	msg      int
	stdin    *bufio.Reader
}

// clientResult is the last line a client prints, after "RESULT ".
type clientResult struct {
	Values map[string]float64 `json:"values"`
	Error  string             `json:"error,omitempty"`
}

// Lines of the hold protocol: the client prints one and waits for a line
// on stdin before it goes on, so the harness can look at the proxy.
const (
	lineReady  = "READY"  // nothing opened yet: take the baseline
	lineHeld   = "HELD"   // everything open: take the reading
	lineResult = "RESULT" // followed by the clientResult JSON
)

func clientMain(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	scenario := fs.String("scenario", "", "bulk-connect, bulk-forward, ws-rtt, ws-throughput, small, ws-hold, scale")
	proxyFlag := fs.String("proxy", "", `"" direct; "env" the HTTP_PROXY the sandbox set; or a proxy URL`)
	c := &client{stdin: bufio.NewReader(os.Stdin)}
	fs.StringVar(&c.target, "target", "", "host:port (bulk-connect, scale)")
	fs.StringVar(&c.url, "url", "", "URL (bulk-forward, small, ws-*)")
	fs.Int64Var(&c.bytes, "bytes", 256<<20, "bytes to move (bulk-*, ws-throughput)")
	fs.DurationVar(&c.duration, "duration", 3*time.Second, "measured time (ws-rtt, small)")
	fs.DurationVar(&c.warmup, "warmup", 500*time.Millisecond, "unmeasured time first (ws-rtt, small)")
	fs.IntVar(&c.conns, "conns", 64, "concurrent connections (small, ws-hold, scale)")
	fs.IntVar(&c.msg, "msg", 1024, "message size (ws-*)")
	cas := fs.String("ca", "", "comma-separated PEM files to trust on top of the system roots (SSL_CERT_FILE)")
	_ = fs.Parse(args)
	if _, _, err := raiseNoFile(); err != nil {
		return err
	}

	vals, err := c.setup(*proxyFlag, *cas)
	if err == nil {
		vals, err = c.run(*scenario)
	}
	res := clientResult{Values: vals}
	if err != nil {
		res.Error = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("%s %s\n", lineResult, b)
	return nil
}

func (c *client) setup(proxyFlag, cas string) (map[string]float64, error) {
	switch proxyFlag {
	case "":
	case "env":
		v := os.Getenv("HTTP_PROXY")
		if v == "" {
			return nil, errors.New("-proxy env: HTTP_PROXY is not set")
		}
		proxyFlag = v
		fallthrough
	default:
		u, err := url.Parse(proxyFlag)
		if err != nil {
			return nil, fmt.Errorf("-proxy: %w", err)
		}
		c.proxy = u
	}
	pool, err := x509.SystemCertPool() // honours SSL_CERT_FILE, which osandbox sets
	if err != nil {
		pool = x509.NewCertPool()
	}
	for f := range strings.SplitSeq(cas, ",") {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no certificate", f)
		}
	}
	c.pool = pool
	return nil, nil
}

func (c *client) run(scenario string) (map[string]float64, error) {
	switch scenario {
	case "bulk-connect":
		return c.bulkConnect()
	case "bulk-forward":
		return c.bulkForward()
	case "ws-rtt":
		return c.wsRTT()
	case "ws-throughput":
		return c.wsThroughput()
	case "small":
		return c.small()
	case "ws-hold":
		return c.wsHold()
	case "scale":
		return c.scale()
	}
	return nil, fmt.Errorf("unknown scenario %q", scenario)
}

// held prints line and waits for the harness to answer.
func (c *client) held(line string) {
	fmt.Println(line)
	waitStdin(c.stdin)
}

var netDialer = &net.Dialer{Timeout: 30 * time.Second}

// dialPinned dials addr, taking benchHost to mean 127.0.0.1.
func dialPinned(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == benchHost {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return netDialer.DialContext(ctx, network, addr)
}

// dialTarget opens a raw byte stream to target: directly, or through a
// CONNECT tunnel when there is a proxy.
func (c *client) dialTarget(ctx context.Context, target string) (net.Conn, error) {
	if c.proxy == nil {
		return dialPinned(ctx, "tcp", target)
	}
	conn, err := netDialer.DialContext(ctx, "tcp", c.proxy.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		conn.Close()
		return nil, fmt.Errorf("CONNECT %s: %s %s", target, resp.Status, body)
	}
	if br.Buffered() > 0 {
		conn.Close()
		return nil, fmt.Errorf("CONNECT %s: bytes before the client spoke", target)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// transport is the HTTP client side: the proxy (forward for http://,
// CONNECT for https://), HTTP/1.1 only, one idle connection kept per
// worker.
func (c *client) transport(conns int) *http.Transport {
	tr := &http.Transport{
		DialContext:         dialPinned,
		TLSClientConfig:     &tls.Config{RootCAs: c.pool, NextProtos: []string{"http/1.1"}},
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	if c.proxy != nil {
		tr.Proxy = http.ProxyURL(c.proxy)
	}
	return tr
}

// readBody reads r to its end with a large buffer and returns the count.
func readBody(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := r.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func throughput(n int64, d time.Duration) map[string]float64 {
	return map[string]float64{
		"mib_per_s": float64(n) / (1 << 20) / d.Seconds(),
		"seconds":   d.Seconds(),
		"bytes":     float64(n),
	}
}

// bulkConnect downloads c.bytes over a CONNECT tunnel (a plain TCP
// connection when direct): one HTTP/1.1 GET written by hand.
func (c *client) bulkConnect() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	conn, err := c.dialTarget(ctx, c.target)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /bytes?n=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", c.bytes, c.target); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 64<<10), nil)
	if err != nil {
		return nil, err
	}
	n, err := readBody(resp.Body)
	if err != nil {
		return nil, err
	}
	if n != c.bytes {
		return nil, fmt.Errorf("got %d bytes, want %d", n, c.bytes)
	}
	return throughput(n, time.Since(start)), nil
}

// bulkForward downloads c.bytes with a forward-proxy GET (absolute URI to
// the proxy).
func (c *client) bulkForward() (map[string]float64, error) {
	tr := c.transport(1)
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Get(fmt.Sprintf("%s?n=%d", c.url, c.bytes))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET: %s", resp.Status)
	}
	n, err := readBody(resp.Body)
	if err != nil {
		return nil, err
	}
	if n != c.bytes {
		return nil, fmt.Errorf("got %d bytes, want %d", n, c.bytes)
	}
	return throughput(n, time.Since(start)), nil
}
