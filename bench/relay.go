package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// relayMain runs the bare relay until stdin closes: the limit any
// userspace proxy can reach, run as its own process as osandbox is.
//
// What it does per client connection, and nothing more:
//   - reads one request head (line by line, up to 64 KiB);
//   - CONNECT host:port: dials it, answers 200, then copies raw bytes;
//   - an absolute-form request (GET http://host:port/p, with or without
//     Upgrade): dials host:port and sends the head unchanged (origin
//     servers must accept absolute form, RFC 9112 3.2.2), then copies raw
//     bytes. Later keep-alive requests on that connection go to the same
//     upstream unread, so forward HTTP costs one parse per connection;
//   - copying is io.Copy each way between the two *net.TCPConn (splice in
//     the kernel), after the bytes buffered past the head are sent;
//     an EOF is passed on as a half-close.
//
// No policy, no audit, no header rewriting, no timeouts.
func relayMain(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	pin := fs.String("pin", benchHost+"=127.0.0.1", "NAME=IP: dial IP for NAME")
	_ = fs.Parse(args)
	if _, _, err := raiseNoFile(); err != nil {
		return err
	}
	pins := map[string]string{}
	if name, ip, ok := strings.Cut(*pin, "="); ok {
		pins[name] = ip
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond) // EMFILE and the like: back off
				continue
			}
			go relayConn(c.(*net.TCPConn), pins)
		}
	}()
	waitStdin(bufio.NewReader(os.Stdin))
	return ln.Close()
}

func relayConn(client *net.TCPConn, pins map[string]string) {
	defer client.Close()
	br := bufio.NewReaderSize(client, 4<<10)
	head, method, target, err := readHead(br)
	if err != nil {
		return
	}
	addr := target
	if method != "CONNECT" {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			_, _ = io.WriteString(client, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
			return
		}
		addr = u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip, ok := pins[host]; ok {
			addr = net.JoinHostPort(ip, port)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		_, _ = io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
		return
	}
	up := c.(*net.TCPConn)
	defer up.Close()
	if method == "CONNECT" {
		_, err = io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n")
	} else {
		_, err = up.Write(head)
	}
	if err != nil {
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relayHalf(up, client)
	}()
	relayHalf(client, up)
	<-done
}

// relayHalf copies src to dst and passes the end on as a half-close.
func relayHalf(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	_ = dst.CloseWrite()
}

// readHead reads a request head up to its blank line and returns it with
// the method and request target of its first line.
func readHead(br *bufio.Reader) (head []byte, method, target string, err error) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, "", "", err
		}
		head = append(head, line...)
		if len(head) > 64<<10 {
			return nil, "", "", errors.New("head too large")
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	first, _, _ := bytes.Cut(head, []byte("\n"))
	f := strings.Fields(string(first))
	if len(f) != 3 {
		return nil, "", "", errors.New("bad request line")
	}
	return head, f[0], f[1], nil
}
