package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// small runs c.conns workers, each sending GETs for a small response one
// after another on its own keep-alive connection, and reports req/s and
// latency over c.duration after c.warmup.
func (c *client) small() (map[string]float64, error) {
	tr := c.transport(c.conns)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	start := time.Now()
	from := start.Add(c.warmup)
	end := from.Add(c.duration)
	lats := make([][]time.Duration, c.conns)
	var errs errCount
	var wg sync.WaitGroup
	for w := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 8192)
			for {
				t0 := time.Now()
				if !t0.Before(end) || errs.count() > 100 {
					break
				}
				if err := getSmall(hc, c.url); err != nil {
					errs.add(err)
					continue
				}
				if !t0.Before(from) {
					lat = append(lat, time.Since(t0))
				}
			}
			lats[w] = lat
		}()
	}
	wg.Wait()
	all := slices.Concat(lats...)
	slices.Sort(all)
	return map[string]float64{
		"req_per_s": float64(len(all)) / c.duration.Seconds(),
		"p50_ms":    float64(percentile(all, 0.50).Microseconds()) / 1000,
		"p99_ms":    float64(percentile(all, 0.99).Microseconds()) / 1000,
		"requests":  float64(len(all)),
		"errors":    float64(errs.count()),
	}, errs.err(len(all)+errs.count(), "requests")
}

func getSmall(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	case n != int64(len(smallBody)):
		return fmt.Errorf("GET %s: %d bytes, want %d", url, n, len(smallBody))
	}
	return nil
}

// scaleRounds is how many echoes each tunnel does once all are open.
const scaleRounds = 3

// scaleGiveUp is how many failed tunnels stop the opening of more.
const scaleGiveUp = 200

// scale opens c.conns tunnels to the echo server and keeps them all open;
// then every tunnel echoes at the same moment, scaleRounds times, and the
// result must come back intact.
func (c *client) scale() (map[string]float64, error) {
	conns := make([]net.Conn, c.conns)
	var errs errCount
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	skipped := 0
	for i := range conns {
		if errs.count() >= scaleGiveUp {
			skipped++ // the proxy is out of something; waiting on each would take minutes
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			conn, err := c.dialTarget(ctx, c.target)
			if err != nil {
				errs.add(err)
				return
			}
			conns[i] = conn
		}()
	}
	wg.Wait()
	opened := time.Since(start)
	open := 0
	begin := make(chan struct{})
	for i, conn := range conns {
		if conn == nil {
			continue
		}
		open++
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-begin
			if err := echoRounds(conn, i); err != nil {
				errs.add(err)
			}
		}()
	}
	echoStart := time.Now()
	close(begin)
	wg.Wait()
	echoed := time.Since(echoStart)
	c.held(lineHeld)
	for _, conn := range conns {
		if conn != nil {
			conn.Close()
		}
	}
	return map[string]float64{
		"tunnels": float64(c.conns), "open": float64(open), "errors": float64(errs.count() + skipped), "skipped": float64(skipped),
		"open_s": opened.Seconds(), "echo_s": echoed.Seconds(),
	}, errs.err(c.conns-skipped, "tunnels tried")
}

func echoRounds(conn net.Conn, id int) error {
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	msg := make([]byte, 64)
	got := make([]byte, len(msg))
	for r := range scaleRounds {
		copy(msg, fmt.Sprintf("tunnel %6d round %d ", id, r))
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(conn, got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("tunnel %d: echo differs from what was sent", id)
		}
	}
	return nil
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	if !slices.IsSorted(sorted) {
		sorted = slices.Sorted(slices.Values(sorted))
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// errCount counts failures and keeps the first.
type errCount struct {
	mu    sync.Mutex
	n     int
	first error
}

func (e *errCount) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.first == nil {
		e.first = err
	}
	e.n++
}

func (e *errCount) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// err is nil when nothing failed, else says how many of total did.
func (e *errCount) err(total int, what string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d %s failed; first: %w", e.n, total, what, e.first)
}
