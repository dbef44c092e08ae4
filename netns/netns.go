// Package netns starts one command inside a fresh network namespace (and,
// for an ordinary user, a user namespace) whose only way out is a set of
// listening sockets opened inside it and handed to the caller.
//
// It knows nothing about HTTP or policy: it brings loopback up, opens the
// listeners it is asked for, passes their file descriptors back over
// SCM_RIGHTS, drops privileges and execs the command. What is served on the
// listeners is the caller's business.
package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InitArg is argv[1] of the hidden init mode. main must call RunInit before
// parsing flags when it sees it.
const InitArg = "__osandbox_init"

// Config says what to start and which listeners to open inside.
type Config struct {
	// Path is the resolved executable; Args is argv (Args[0] is the name as typed).
	Path string
	Args []string
	// Env is the command's whole environment.
	Env []string
	// Dir is the working directory; "" means the caller's.
	Dir string
	// Stdin, Stdout and Stderr are passed through as they are; nil means /dev/null.
	Stdin, Stdout, Stderr *os.File
	// Listen lists the sockets to open inside the namespace, in order.
	Listen []Endpoint
	// Capture, if non-nil, forces traffic that ignores the proxy variables
	// to two of the Listen sockets (see Capture). If the kernel cannot do
	// it, the run goes on without and Sandbox.Warnings says so.
	Capture *Capture
	// HandoffTimeout bounds the wait for the listeners; 0 means 10 s.
	HandoffTimeout time.Duration
}

// Sandbox is a started command and the listeners opened in its namespace.
// Endpoint is a socket to open inside the namespace.
type Endpoint struct {
	Network string `json:"network"` // "tcp" or "udp"
	Addr    string `json:"addr"`
}

type Sandbox struct {
	// Listeners are the "tcp" endpoints and PacketConns the "udp" ones, each
	// in Config.Listen order. They belong to the caller, who must close
	// them: an open socket keeps the namespace alive.
	Listeners   []net.Listener
	PacketConns []net.PacketConn
	// Warnings are things init could not set up that the run can do without
	// (transparent capture where nf_tables is missing).
	Warnings []string
	// Rootless is true when a user namespace was created.
	Rootless bool

	cmd *exec.Cmd
}

// Start creates the namespaces, waits for the listeners and returns with the
// command running. The calling goroutine's OS thread is locked for good,
// because the child's parent-death signal is tied to the thread that forked it.
func Start(cfg Config) (*Sandbox, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	spec, err := encodeInitSpec(initSpec{Path: cfg.Path, Listen: cfg.Listen, Capture: cfg.Capture, Root: os.Geteuid() == 0})
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	parentEnd := os.NewFile(uintptr(fds[0]), "handoff-parent")
	childEnd := os.NewFile(uintptr(fds[1]), "handoff-child")
	defer parentEnd.Close()

	cmd := &exec.Cmd{
		Path:       self,
		Args:       append([]string{"osandbox-init", InitArg, spec, "--"}, cfg.Args...),
		Env:        cfg.Env,
		Dir:        cfg.Dir,
		Stdin:      cfg.Stdin,
		Stdout:     cfg.Stdout,
		Stderr:     cfg.Stderr,
		ExtraFiles: []*os.File{childEnd},
	}
	rootless := os.Geteuid() != 0
	cmd.SysProcAttr = procAttr(rootless, cfg.Stdin)

	// Whatever the command leaves running is reparented to us, not to init,
	// so Wait can end it with the command (see killLeftovers).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become subreaper: %w", err)
	}
	runtime.LockOSThread()
	err = cmd.Start()
	childEnd.Close()
	if err != nil {
		return nil, fmt.Errorf("start namespace: %w", err)
	}
	timeout := cfg.HandoffTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	sb := &Sandbox{Rootless: rootless, cmd: cmd}
	err = receiveSockets(parentEnd, cfg.Listen, timeout, sb)
	if err == nil {
		err = allowExec(parentEnd)
	}
	if err != nil {
		sb.closeSockets()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	return sb, nil
}

// procAttr builds the clone flags: user+net namespaces for an ordinary user,
// a net namespace alone for root.
func procAttr(rootless bool, stdin *os.File) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
		// The command gets its own process group, so that signals meant for
		// osandbox's group reach it once, through forwarding, not twice.
		Setpgid: true,
	}
	if stdin != nil && isTerminal(stdin) {
		// An interactive command owns the terminal: Ctrl-C, Ctrl-Z and reads
		// from the tty go to it, as they would without osandbox.
		attr.Foreground = true
		attr.Ctty = int(stdin.Fd())
	}
	if rootless {
		uid, gid := os.Getuid(), os.Getgid()
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		attr.GidMappingsEnableSetgroups = false
		// init needs CAP_NET_ADMIN in its namespace to bring lo up; it
		// clears this before the exec.
		attr.AmbientCaps = []uintptr{unix.CAP_NET_ADMIN}
	}
	return attr
}

// allowExec lets init exec the command. Before that, osandbox becomes
// non-dumpable: the command runs as our uid and could otherwise ptrace
// osandbox, whose sockets live in the host's namespace. (Not earlier: a
// non-dumpable parent could not write the child's uid_map.)
func allowExec(conn *os.File) error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("set non-dumpable: %w", err)
	}
	if _, err := conn.Write([]byte{goAhead}); err != nil {
		return fmt.Errorf("release command: %w", err)
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (s *Sandbox) closeSockets() {
	for _, ln := range s.Listeners {
		ln.Close()
	}
	for _, pc := range s.PacketConns {
		pc.Close()
	}
}

// Pid is the command's process id (in the caller's pid namespace).
func (s *Sandbox) Pid() int { return s.cmd.Process.Pid }

// Signal sends sig to the command.
func (s *Sandbox) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Wait waits for the command and returns its exit status the way a shell
// reports it: the exit code, or 128+N for death by signal N.
func (s *Sandbox) Wait() (int, error) {
	err := s.cmd.Wait()
	killLeftovers(s.cmd.Process.Pid)
	restoreForeground(s.cmd.SysProcAttr)
	if err == nil {
		return 0, nil
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return 0, fmt.Errorf("wait: %w", err)
	}
	ws, ok := exitErr.Sys().(syscall.WaitStatus)
	if !ok {
		return exitErr.ExitCode(), nil
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// restoreForeground gives the terminal back to osandbox's process group once
// an interactive command is gone, so the shell that started osandbox gets it
// back too. SIGTTOU is ignored meanwhile: a background group may not take the
// terminal otherwise.
func restoreForeground(attr *syscall.SysProcAttr) {
	if attr == nil || !attr.Foreground {
		return
	}
	signalIgnoreTTOU(func() {
		_ = unix.IoctlSetPointerInt(attr.Ctty, unix.TIOCSPGRP, unix.Getpgrp())
	})
}
