package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// raiseNoFile sets the soft RLIMIT_NOFILE to the hard limit, as the issue
// asks of osandbox, and leaves the hard limit alone: the processes the
// harness starts inherit the machine's real ceiling, not a raised one.
func raiseNoFile() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	return r.Cur, r.Max, nil
}

// procKiB reads a "Name:   123 kB" field of /proc/PID/status.
func procKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// procFDs counts the open file descriptors of pid, and how many of them
// are pipes (Go's splice keeps one pipe per spliced direction).
func procFDs(pid int) (total, pipes int) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1, -1
	}
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			pipes++
		}
	}
	return len(ents), pipes
}

// procNoFile is the "Max open files" line of /proc/PID/limits: soft, hard.
func procNoFile(pid int) (soft, hard string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "?", "?"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) >= 2 {
				return f[0], f[1]
			}
		}
	}
	return "?", "?"
}

// tailBuffer keeps the last bytes written to it, for error messages.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

const tailMax = 16 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// child is a process the harness started and talks to by lines: it reads
// the child's stdout line by line and answers on its stdin.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stdout io.Closer
	stderr *tailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's error, valid after done
}

func startChild(name string, args ...string) (*child, error) {
	c := &child{cmd: exec.Command(name, args...), stderr: &tailBuffer{}, done: make(chan struct{})}
	c.cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.out, c.stdout = bufio.NewReader(stdout), stdout
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		// Not cmd.Wait: it would close stdout under a reader that has not
		// yet read the child's last line. stop closes the pipes instead.
		state, err := c.cmd.Process.Wait()
		if err == nil && !state.Success() {
			err = &exec.ExitError{ProcessState: state}
		}
		c.err = err
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// readLine returns the child's next stdout line, or fails once timeout
// passes (the child is killed then).
func (c *child) readLine(timeout time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := c.out.ReadString('\n')
		ch <- res{strings.TrimRight(s, "\r\n"), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			<-c.exited(5 * time.Second)
			return r.s, fmt.Errorf("%s: %w (exit: %v; stderr: %s)", c.cmd.Args[0], r.err, c.err, c.stderr)
		}
		return r.s, nil
	case <-time.After(timeout):
		c.kill()
		return "", fmt.Errorf("%s: no output within %s (stderr: %s)", c.cmd.Args[0], timeout, c.stderr)
	}
}

// proceed tells a child waiting on stdin to go on.
func (c *child) proceed() error {
	_, err := io.WriteString(c.stdin, "\n")
	return err
}

// stop closes the child's stdin (its signal to finish) and waits, killing
// it if it takes longer than grace.
func (c *child) stop(grace time.Duration) error {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(grace):
		c.kill()
		<-c.done
		c.stdout.Close()
		return errors.New(c.cmd.Args[0] + ": killed after it did not stop")
	}
	c.stdout.Close()
	return c.err
}

// exited is closed when the child has exited or after timeout.
func (c *child) exited(timeout time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		select {
		case <-c.done:
		case <-time.After(timeout):
		}
		close(ch)
	}()
	return ch
}

func (c *child) kill() { _ = c.cmd.Process.Kill() }

// waitStdin blocks until a line (or EOF) arrives on stdin: the harness's
// "go on".
func waitStdin(r *bufio.Reader) {
	_, _ = r.ReadString('\n')
}
