package audit

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Log. The zero value is valid.
type Options struct {
	// Sandbox is the run id put on every event that has none; see NewID.
	// Empty means events keep whatever Sandbox they carry.
	Sandbox string
	// Denials, if non-nil, gets one line per denial (see Event.DenialLine),
	// written as the event is emitted. nil = print nothing (--quiet).
	Denials io.Writer
	// FlushInterval bounds how long an event may sit in the buffer.
	// 0 (or negative) = 1s, the promise in DESIGN 1.3.
	FlushInterval time.Duration
	// Now stamps events that have no Time. nil = time.Now.
	Now func() time.Time
}

// bufSize is the write buffer: a few hundred events, one write syscall.
const bufSize = 64 << 10

// Log appends events as JSON lines to a writer; safe for concurrent use.
// A nil *Log discards everything.
type Log struct {
	sandbox string
	denials io.Writer
	now     func() time.Time

	conns  atomic.Uint64
	closed atomic.Bool // fast path for Emit; mu guards the real state change
	bufs   sync.Pool   // of *[]byte, to encode outside the lock

	mu     sync.Mutex
	bw     *bufio.Writer // nil: the log writes nowhere
	closer io.Closer     // the file Open made; nil for New

	denialMu sync.Mutex // one denial line per Write, never interleaved

	stop chan struct{} // closed by Close to end the flusher
	done chan struct{} // closed by the flusher when it returns
}

// Open returns a Log appending to the file at path, created with mode 0600
// if absent. The Log owns the file and closes it on Close. An empty path
// gives a Log that writes nowhere but still prints denials.
func Open(path string, opts Options) (*Log, error) {
	if path == "" {
		return New(nil, opts), nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := New(f, opts)
	l.closer = f
	return l, nil
}

// New returns a Log writing to w, which it does not close. A nil w gives a
// Log that writes nowhere but still prints denials.
func New(w io.Writer, opts Options) *Log {
	l := &Log{
		sandbox: opts.Sandbox,
		denials: opts.Denials,
		now:     opts.Now,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.bufs.New = func() any {
		b := make([]byte, 0, 512)
		return &b
	}
	if w == nil {
		close(l.done)
		return l
	}
	l.bw = bufio.NewWriterSize(w, bufSize)
	interval := opts.FlushInterval
	if interval <= 0 {
		interval = time.Second
	}
	go l.flushEvery(interval)
	return l
}

// Sandbox returns the run id the Log puts on events.
func (l *Log) Sandbox() string {
	if l == nil {
		return ""
	}
	return l.sandbox
}

// NextConn returns a new connection id: 1, 2, 3, ... in order of calls.
// A nil Log returns 0, which the encoder treats as "no connection".
func (l *Log) NextConn() uint64 {
	if l == nil {
		return 0
	}
	return l.conns.Add(1)
}

// Emit records e, filling Time, Sandbox and a dns event's Proto if empty,
// and prints its denial line if it is one. It does not wait for the disk:
// the line goes to a buffer that is written out when full, at least once per
// FlushInterval, and on Flush and Close. It blocks only while a full buffer
// is written or the Denials writer blocks. After Close it does nothing.
func (l *Log) Emit(e Event) {
	if l == nil || l.closed.Load() {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	if e.Sandbox == "" {
		e.Sandbox = l.sandbox
	}
	if e.Event == EventDNS && e.Proto == "" {
		e.Proto = ProtoDNS
	}
	if l.denials != nil {
		if line, ok := e.DenialLine(); ok {
			l.denialMu.Lock()
			io.WriteString(l.denials, line+"\n") // stderr: nowhere to report a failure
			l.denialMu.Unlock()
		}
	}
	if l.bw == nil {
		return
	}
	bp := l.bufs.Get().(*[]byte)
	b := append(e.AppendJSON((*bp)[:0]), '\n')

	l.mu.Lock()
	if !l.closed.Load() {
		l.writeLine(b)
	}
	l.mu.Unlock()

	if cap(b) <= bufSize { // do not pin a huge one-off buffer
		*bp = b
		l.bufs.Put(bp)
	}
}

// writeLine buffers one line, flushing first if it would not fit, so that
// each write to the file holds whole lines only: a second process appending
// to the same file cannot split one. The caller holds l.mu. A write error
// sticks in the bufio.Writer and is returned by Flush and Close.
func (l *Log) writeLine(b []byte) {
	if len(b) > l.bw.Available() && l.bw.Buffered() > 0 {
		l.bw.Flush()
	}
	l.bw.Write(b) // larger than the buffer: bufio writes it straight through
}

// Flush writes buffered events out. It returns the first write error the
// Log met, if any; after one, later events are lost.
func (l *Log) Flush() error {
	if l == nil || l.bw == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked()
}

func (l *Log) flushLocked() error {
	if err := l.bw.Flush(); err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	return nil
}

// flushEvery is the background flusher: it writes out whatever is buffered
// once per interval until Close.
func (l *Log) flushEvery(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if l.bw.Buffered() > 0 {
				l.bw.Flush() // the error sticks; Flush and Close report it
			}
			l.mu.Unlock()
		}
	}
}

// Close flushes, stops the flusher and closes the file Open made. Emit
// after Close does nothing; a second Close returns nil.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return nil
	}
	l.closed.Store(true)
	var err error
	if l.bw != nil {
		err = l.flushLocked()
	}
	l.mu.Unlock()

	close(l.stop)
	<-l.done
	if l.closer != nil {
		if cerr := l.closer.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("audit: %w", cerr)
		}
	}
	return err
}

// NewID returns a short random id for a run: 12 lowercase hex characters.
func NewID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}
