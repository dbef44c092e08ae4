package netns

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initSpec is what the parent tells init on its command line.
type initSpec struct {
	Path    string     `json:"path"`
	Listen  []Endpoint `json:"listen"`
	Capture *Capture   `json:"capture,omitempty"`
	Root    bool       `json:"root"`
}

func encodeInitSpec(s initSpec) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode init spec: %w", err)
	}
	return string(b), nil
}

// handoffMsg rides along with the SCM_RIGHTS message: either the listeners
// are attached, or Error says why init could not open them.
type handoffMsg struct {
	Error    string   `json:"error,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// goAhead is the byte the parent sends once it serves the listeners.
const goAhead = 'g'

// awaitGoAhead blocks init until the parent is ready for the command.
func awaitGoAhead() error {
	var b [1]byte
	n, err := unix.Read(handoffFD, b[:])
	if err != nil {
		return fmt.Errorf("wait for osandbox: %w", err)
	}
	if n != 1 || b[0] != goAhead {
		return errors.New("osandbox went away before the command started")
	}
	return nil
}

// handoffFD is the child's end of the socketpair: ExtraFiles[0].
const handoffFD = 3

// sendListeners is init's half of the hand-off.
func sendListeners(files []*os.File, warnings []string, initErr error) error {
	msg := handoffMsg{Warnings: warnings}
	if initErr != nil {
		msg.Error = initErr.Error()
	}
	payload, _ := json.Marshal(msg)
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(handoffFD, payload, oob, nil, 0)
}

// receiveSockets is the parent's half: one message carrying a fd for each
// endpoint, turned into sb's listeners and packet conns.
func receiveSockets(conn *os.File, eps []Endpoint, timeout time.Duration, sb *Sandbox) error {
	fd := int(conn.Fd())
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("handoff timeout: %w", err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*len(eps)))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("namespace did not hand over its sockets within %s", timeout)
		}
		return fmt.Errorf("receive sockets: %w", err)
	}
	if n == 0 && oobn == 0 {
		return errors.New("namespace setup failed before handing over its sockets (see the error above)")
	}
	var msg handoffMsg
	if err := json.Unmarshal(buf[:n], &msg); err != nil {
		return fmt.Errorf("decode handoff: %w", err)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return err
	}
	if msg.Error != "" || len(fds) != len(eps) {
		closeFDs(fds)
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
		return fmt.Errorf("handoff: got %d sockets, want %d", len(fds), len(eps))
	}
	sb.Warnings = msg.Warnings
	for i, sfd := range fds {
		f := os.NewFile(uintptr(sfd), eps[i].Network+":"+eps[i].Addr)
		var err error
		if eps[i].Network == "udp" {
			var pc net.PacketConn
			if pc, err = net.FilePacketConn(f); err == nil {
				sb.PacketConns = append(sb.PacketConns, pc)
			}
		} else {
			var ln net.Listener
			if ln, err = net.FileListener(f); err == nil {
				sb.Listeners = append(sb.Listeners, ln)
			}
		}
		f.Close()
		if err != nil {
			closeFDs(fds[i+1:])
			return fmt.Errorf("socket %s: %w", f.Name(), err)
		}
	}
	return nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func signalIgnoreTTOU(f func()) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	f()
}
