package netns

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit statuses of init itself, as docker run and env use them.
const (
	ExitSetupFailed   = 125
	ExitNotExecutable = 126
	ExitNotFound      = 127
)

// droppedForRoot are capabilities a root command must not keep: each one
// could reach the host's network namespace (setns, a veth into the host,
// ptrace of osandbox, bpf) or tamper with the sandbox's own rules.
var droppedForRoot = []uintptr{
	unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SYS_PTRACE,
	unix.CAP_SYS_MODULE, unix.CAP_BPF, unix.CAP_PERFMON, unix.CAP_SYS_RAWIO,
}

// RunInit is the hidden init mode: argv is [name, InitArg, spec, "--", cmd...].
// It runs inside the new namespaces, hands the listeners over and execs the
// command. It never returns.
func RunInit(argv []string) {
	// Capabilities and no_new_privs are per thread: everything from here to
	// the exec happens on this one.
	runtime.LockOSThread()
	code, err := runInit(argv)
	fmt.Fprintf(os.Stderr, "osandbox: %v\n", err)
	os.Exit(code)
}

func runInit(argv []string) (int, error) {
	if len(argv) < 5 || argv[1] != InitArg || argv[3] != "--" {
		return ExitSetupFailed, errors.New("init: bad arguments (this mode is internal)")
	}
	var spec initSpec
	if err := json.Unmarshal([]byte(argv[2]), &spec); err != nil {
		return ExitSetupFailed, fmt.Errorf("init: decode spec: %w", err)
	}
	files, warnings, err := setupNetwork(spec)
	if sendErr := sendListeners(files, warnings, err); sendErr != nil && err == nil {
		err = fmt.Errorf("hand over listeners: %w", sendErr)
	}
	for _, f := range files {
		f.Close()
	}
	if err == nil {
		err = awaitGoAhead()
	}
	unix.Close(handoffFD)
	if err != nil {
		return ExitSetupFailed, err
	}
	if err := dropPrivileges(spec.Root); err != nil {
		return ExitSetupFailed, err
	}
	err = syscall.Exec(spec.Path, argv[4:], os.Environ())
	switch {
	case errors.Is(err, unix.ENOENT):
		return ExitNotFound, fmt.Errorf("%s: command not found", argv[4])
	default:
		return ExitNotExecutable, fmt.Errorf("%s: %w", argv[4], err)
	}
}

// setupNetwork brings lo up, opens the sockets and, if asked, installs
// capture. A capture the kernel refuses is a warning, not a failure.
func setupNetwork(spec initSpec) ([]*os.File, []string, error) {
	if err := linkUp("lo"); err != nil {
		return nil, nil, fmt.Errorf("bring lo up: %w", err)
	}
	files := make([]*os.File, 0, len(spec.Listen))
	for _, ep := range spec.Listen {
		f, err := openSocket(ep)
		if err != nil {
			closeFiles(files)
			return nil, nil, err
		}
		files = append(files, f)
	}
	var warnings []string
	if spec.Capture != nil {
		if err := setupCapture(*spec.Capture); err != nil {
			warnings = append(warnings, fmt.Sprintf(
				"transparent capture is off (%v): programs that ignore HTTP_PROXY cannot connect at all; see osandbox doctor", err))
		}
	}
	return files, warnings, nil
}

func openSocket(ep Endpoint) (*os.File, error) {
	if ep.Network == "udp" {
		pc, err := net.ListenPacket("udp", ep.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen udp %s: %w", ep.Addr, err)
		}
		defer pc.Close()
		return pc.(*net.UDPConn).File()
	}
	ln, err := net.Listen("tcp", ep.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", ep.Addr, err)
	}
	defer ln.Close()
	return ln.(*net.TCPListener).File()
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dropPrivileges clears the ambient capabilities init was given, takes the
// dangerous ones out of a root command's reach, and sets no_new_privs so
// nothing the command execs can gain any back.
func dropPrivileges(root bool) error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if err := dropCaps(root); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// dropCaps empties the inheritable set and, for root, removes
// droppedForRoot from every set including the bounding set. An ordinary
// user's command has no capabilities after the exec anyway.
func dropCaps(root bool) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if root {
		for _, c := range droppedForRoot {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("drop capability %d: %w", c, err)
			}
			data[c/32].Permitted &^= 1 << (c % 32)
			data[c/32].Effective &^= 1 << (c % 32)
		}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
