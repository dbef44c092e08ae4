package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsDial opens a WebSocket to c.url: "ws://" goes through the proxy as a
// forward-proxy GET with Upgrade, so it takes the proxy's 101 switch.
func (c *client) wsDial(ctx context.Context, tr *http.Transport) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(-1)
	return conn, nil
}

// wsEcho sends msg and reads the echo into buf, which is len(msg) long.
func wsEcho(ctx context.Context, conn *websocket.Conn, msg, buf []byte) error {
	if err := conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
		return err
	}
	return wsReadInto(ctx, conn, buf)
}

// wsReadInto reads one message of exactly len(buf) bytes without
// allocating it.
func wsReadInto(ctx context.Context, conn *websocket.Conn, buf []byte) error {
	_, r, err := conn.Reader(ctx)
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	if n, err := r.Read(buf[:1]); n != 0 || err != io.EOF {
		return fmt.Errorf("echo longer than %d bytes", len(buf))
	}
	return nil
}

// wsRTT counts sequential round trips of c.msg-byte messages on one
// connection.
func (c *client) wsRTT() (map[string]float64, error) {
	ctx := context.Background()
	tr := c.transport(1)
	conn, err := c.wsDial(ctx, tr)
	if err != nil {
		return nil, err
	}
	defer conn.CloseNow()
	msg, buf := make([]byte, c.msg), make([]byte, c.msg)
	_, _ = rand.Read(msg)
	for end := time.Now().Add(c.warmup); time.Now().Before(end); {
		if err := wsEcho(ctx, conn, msg, buf); err != nil {
			return nil, err
		}
	}
	lat := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	end := start.Add(c.duration)
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if err := wsEcho(ctx, conn, msg, buf); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	return map[string]float64{
		"rt_per_s": float64(len(lat)) / elapsed.Seconds(),
		"p50_us":   float64(percentile(lat, 0.50).Microseconds()),
		"p99_us":   float64(percentile(lat, 0.99).Microseconds()),
	}, nil
}

// wsThroughput echoes c.bytes in c.msg-byte messages on one connection, a
// writer and a reader running at once, and reports the payload rate one
// way (the wire carries it both ways).
func (c *client) wsThroughput() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tr := c.transport(1)
	conn, err := c.wsDial(ctx, tr)
	if err != nil {
		return nil, err
	}
	defer conn.CloseNow()
	msg, buf := make([]byte, c.msg), make([]byte, c.msg)
	_, _ = rand.Read(msg)
	if err := wsEcho(ctx, conn, msg, buf); err != nil { // warm the path
		return nil, err
	}
	n := max(c.bytes/int64(c.msg), 1)
	start := time.Now()
	wrote := make(chan error, 1)
	go func() {
		for range n {
			if err := conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	for range n {
		if err := wsReadInto(ctx, conn, buf); err != nil {
			return nil, err
		}
	}
	if err := <-wrote; err != nil {
		return nil, err
	}
	return throughput(n*int64(c.msg), time.Since(start)), nil
}

// wsHold opens c.conns WebSockets, echoes once on each, and holds them
// idle while the harness reads the proxy's memory.
func (c *client) wsHold() (map[string]float64, error) {
	c.held(lineReady)
	ctx := context.Background()
	tr := c.transport(1)
	conns := make([]*websocket.Conn, c.conns)
	var errs errCount
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			conn, err := c.wsDial(dctx, tr)
			if err == nil {
				msg := []byte("hold")
				err = wsEcho(dctx, conn, msg, make([]byte, len(msg)))
			}
			if err != nil {
				errs.add(err)
				return
			}
			conns[i] = conn
		}()
	}
	wg.Wait()
	opened := time.Since(start)
	c.held(lineHeld)
	for _, conn := range conns {
		if conn != nil {
			conn.CloseNow()
		}
	}
	vals := map[string]float64{"conns": float64(c.conns), "errors": float64(errs.count()), "open_s": opened.Seconds()}
	return vals, errs.err(c.conns, "connections")
}
