// Command capclient is a client that ignores every proxy variable, for the
// e2e tests of transparent capture: it dials with a plain net.Dialer and
// resolves names through the system's resolver configuration, as Node's
// fetch, many Go binaries and ssh do.
//
//	capclient [flags] http URL              GET URL; prints "status N" and the body
//	capclient [flags] ws URL MESSAGE        WebSocket: send MESSAGE, print the echo
//	capclient [flags] tcp HOST:PORT LINE    send LINE, print the line read back
//	capclient [flags] dns NAME TYPE         one query, no retries; prints the
//	                                        rcode and the answers
//
// Flags: -timeout (whole run), -cacert (PEM roots instead of the system
// ones), -servername (TLS server name, to disagree with the URL's host),
// -server (DNS server address; default: the first of /etc/resolv.conf).
// It exits 0 on success and 1, with the error on stderr, otherwise.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/miekg/dns"
)

var dnsServer string

func main() {
	timeout := flag.Duration("timeout", 10*time.Second, "limit for the whole run")
	cacert := flag.String("cacert", "", "PEM file of trusted roots (default: system roots)")
	serverName := flag.String("servername", "", "TLS server name (default: the host dialled)")
	flag.StringVar(&dnsServer, "server", "", "DNS server IP (default: the first of /etc/resolv.conf)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, flag.Args(), *cacert, *serverName); err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "capclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, cacert, serverName string) error {
	if len(args) < 2 {
		return errors.New("usage: capclient [flags] http|ws|tcp|dns ARGS")
	}
	tlsCfg := &tls.Config{ServerName: serverName}
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return err
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificates", cacert)
		}
	}
	// No Proxy: the proxy variables osandbox sets are ignored.
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       (&net.Dialer{}).DialContext,
		TLSClientConfig:   tlsCfg,
		DisableKeepAlives: true,
	}
	client := &http.Client{Transport: tr}
	switch mode := args[0]; {
	case mode == "http" && len(args) == 2:
		return get(ctx, client, args[1])
	case mode == "ws" && len(args) == 3:
		return wsEcho(ctx, client, args[1], args[2])
	case mode == "tcp" && len(args) == 3:
		return tcpEcho(ctx, args[1], args[2])
	case mode == "dns" && len(args) == 3:
		return query(ctx, args[1], args[2])
	default:
		return fmt.Errorf("bad arguments %q", args)
	}
}

func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("status %d\n%s", resp.StatusCode, b)
	return nil
}

func wsEcho(ctx context.Context, client *http.Client, url, msg string) error {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		return err
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, b, err := c.Read(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", b)
	return c.Close(websocket.StatusNormalClosure, "")
}

func tcpEcho(ctx context.Context, addr, line string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	fmt.Print(reply)
	return nil
}

// query sends exactly one question, without retries, to port 53 of
// -server or of the first server of /etc/resolv.conf (inside the sandbox,
// nftables takes either to the stub).
func query(ctx context.Context, name, qtype string) error {
	server := dnsServer
	if server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return err
		}
		if len(conf.Servers) == 0 {
			return errors.New("resolv.conf names no server")
		}
		server = conf.Servers[0]
	}
	t, ok := dns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		return fmt.Errorf("unknown type %q", qtype)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, net.JoinHostPort(server, "53"))
	if err != nil {
		return err
	}
	out := []string{dns.RcodeToString[resp.Rcode]}
	for _, rr := range resp.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		default:
			out = append(out, dns.TypeToString[rr.Header().Rrtype])
		}
	}
	fmt.Println(strings.Join(out, " "))
	return nil
}
