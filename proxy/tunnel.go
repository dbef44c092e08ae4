package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pipe is one raw two-way byte stream between a client and an upstream:
// a blind CONNECT tunnel, or a connection after a 101.
type pipe struct {
	client, upstream net.Conn
	// fromClient and fromUpstream are bytes already read past the last HTTP
	// head on each side (copies: the readers are let go); sent first.
	fromClient, fromUpstream []byte
	idle                     time.Duration
}

// pipeResult is what a finished pipe moved.
type pipeResult struct {
	Up, Down int64 // client->upstream, upstream->client
	Duration time.Duration
}

// run copies both ways until both directions end, propagating each EOF as
// a half-close, or until no data has moved either way for p.idle. It closes
// both conns before it returns.
func (p *pipe) run() pipeResult {
	start := time.Now()
	stop := p.watchIdle()
	var wg sync.WaitGroup
	var up int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		up = copyToUpstream(p)
	}()
	down := copyToClient(p)
	wg.Wait()
	stop()
	p.client.Close()
	p.upstream.Close()
	return pipeResult{Up: up, Down: down, Duration: time.Since(start)}
}

// pending copies what br holds past the head, so that br itself (and the
// connection state that owns it) can be let go for the pipe's lifetime.
func pending(br *bufio.Reader) []byte {
	if br == nil || br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return bytes.Clone(b)
}

func copyToUpstream(p *pipe) int64 { return copyHalf(p.upstream, p.client, p.fromClient) }
func copyToClient(p *pipe) int64   { return copyHalf(p.client, p.upstream, p.fromUpstream) }

// copyHalf sends what buffered holds, then copies src to dst (spliced in
// the kernel when both are TCP). On EOF it half-closes dst so the peer sees
// the end; on an error it closes both so the other direction ends too.
func copyHalf(dst, src net.Conn, buffered []byte) int64 {
	var n int64
	var err error
	if len(buffered) > 0 {
		var m int
		m, err = dst.Write(buffered)
		n += int64(m)
	}
	if err == nil {
		var m int64
		m, err = copyStream(dst, src)
		n += m
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		dst.Close()
		src.Close()
		return n
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return n
		}
	}
	dst.Close()
	return n
}

// watchIdle closes both conns once neither has received data for p.idle.
// It costs one timer, no goroutine, and leaves the splice path alone: the
// kernel's TCP_INFO says when each socket last received data.
func (p *pipe) watchIdle() (stop func()) {
	if p.idle <= 0 {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		quiet := min(idleFor(p.client), idleFor(p.upstream))
		if quiet >= p.idle {
			p.client.Close()
			p.upstream.Close()
			return
		}
		t.Reset(p.idle - quiet)
	}
	mu.Lock()
	t = time.AfterFunc(p.idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// idleFor is how long since c's socket last received data, from TCP_INFO
// (wrappers such as TLS are looked through). A conn that is not a socket
// cannot say and counts as active.
func idleFor(c net.Conn) time.Duration {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var info *unix.TCPInfo
	var infoErr error
	if err := raw.Control(func(fd uintptr) {
		info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || infoErr != nil {
		return 0
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond
}

// countingConn counts the bytes read from and written to a conn. It hides
// the splice path, so it is used only where we parse the stream anyway.
type countingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

func (c *countingConn) NetConn() net.Conn { return c.Conn }

func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
