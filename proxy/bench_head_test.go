package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Heads the request-head reader sees: a typical client request, a browser
// one with cookies, and one near the 64 KiB limit.
var benchHeads = []struct {
	name string
	head string
}{
	{"curl", "GET /repos/o/r/pulls/1 HTTP/1.1\r\nHost: api.github.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"},
	{"browser", "GET /socket/chat?room=1 HTTP/1.1\r\nHost: chat.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
		"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Connection: keep-alive\r\nCookie: " + strings.Repeat("session=abcdef0123456789; ", 40) + "\r\n" +
		"Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n"},
	{"60KiB", "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n" +
		strings.Repeat("X-Filler: "+strings.Repeat("a", 90)+"\r\n", 600) + "\r\n"},
}

// benchLimit is DefaultLimits.MaxHeaderBytes; the reader is sized as
// newSessionReader sizes it.
const benchLimit = 64 << 10

// BenchmarkScanHead is the framing check on a head that is already
// buffered whole (the common case: one read brings it).
func BenchmarkScanHead(b *testing.B) {
	for _, h := range benchHeads {
		b.Run(h.name, func(b *testing.B) {
			src := strings.NewReader(h.head)
			r := bufio.NewReaderSize(src, benchLimit+4<<10)
			b.SetBytes(int64(len(h.head)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(h.head)
				r.Reset(src)
				if err := scanHead(r, benchLimit); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScanHeadTrickle is the same with the head arriving a line at a
// time, so scanHead peeks again after each read.
func BenchmarkScanHeadTrickle(b *testing.B) {
	for _, h := range benchHeads {
		b.Run(h.name, func(b *testing.B) {
			lines := strings.SplitAfter(h.head, "\n")
			src := &lineReader{}
			r := bufio.NewReaderSize(src, benchLimit+4<<10)
			b.SetBytes(int64(len(h.head)))
			b.ReportAllocs()
			for b.Loop() {
				src.lines = lines
				r.Reset(src)
				if err := scanHead(r, benchLimit); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckFraming is the line-by-line check alone.
func BenchmarkCheckFraming(b *testing.B) {
	for _, h := range benchHeads {
		b.Run(h.name, func(b *testing.B) {
			head := []byte(h.head)
			b.SetBytes(int64(len(head)))
			b.ReportAllocs()
			for b.Loop() {
				if err := checkFraming(head); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadHead is what readRequest does per request: scanHead, then
// net/http's parser on the same buffered reader.
func BenchmarkReadHead(b *testing.B) {
	for _, h := range benchHeads {
		b.Run(h.name, func(b *testing.B) {
			src := strings.NewReader(h.head)
			r := bufio.NewReaderSize(src, benchLimit+4<<10)
			b.SetBytes(int64(len(h.head)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(h.head)
				r.Reset(src)
				if err := scanHead(r, benchLimit); err != nil {
					b.Fatal(err)
				}
				if _, err := http.ReadRequest(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// lineReader returns one line per Read.
type lineReader struct{ lines []string }

func (l *lineReader) Read(p []byte) (int, error) {
	if len(l.lines) == 0 {
		return 0, io.EOF
	}
	n := copy(p, l.lines[0])
	if n < len(l.lines[0]) {
		l.lines[0] = l.lines[0][n:]
	} else {
		l.lines = l.lines[1:]
	}
	return n, nil
}
