package proxy

import (
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// copyStream copies src to dst until EOF, spliced in the kernel when both
// are TCP. io.Copy alone would do that too, but it keeps its splice pipe
// (two fds and the pipe's buffer) for as long as the copy lasts, idle or
// not: an idle tunnel would cost six fds instead of two, and a few
// thousand tunnels would exhaust RLIMIT_NOFILE. So between bursts it waits
// for src to become readable holding nothing, then splices exactly what is
// queued; the pipe goes back to the runtime's pool each time.
func copyStream(dst, src net.Conn) (int64, error) {
	sc, ok1 := src.(*net.TCPConn)
	dc, ok2 := dst.(*net.TCPConn)
	if !ok1 || !ok2 {
		return io.Copy(dst, src)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}
	var total int64
	lr := &io.LimitedReader{R: sc}
	for {
		var queued int
		var eof bool
		var sockErr error
		err := raw.Read(func(fd uintptr) bool {
			n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if err != nil {
				sockErr = err
				return true
			}
			if n > 0 {
				queued = n
				return true
			}
			// Nothing queued: no data yet, or the end.
			var b [1]byte
			m, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN:
				return false // wait for readability, holding no pipe
			case err != nil:
				sockErr = err
			case m == 0:
				eof = true
			}
			return true // m > 0: data arrived meanwhile; ask again
		})
		switch {
		case err != nil:
			return total, err
		case sockErr != nil:
			return total, sockErr
		case eof:
			return total, nil
		case queued == 0:
			continue
		}
		lr.N = int64(queued)
		n, err := dc.ReadFrom(lr)
		total += n
		if err != nil {
			return total, err
		}
	}
}
