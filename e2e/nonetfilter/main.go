// Command nonetfilter runs a program on a kernel that refuses nftables, for
// the e2e test of osandbox's fallback when transparent capture cannot be
// set up. It installs a seccomp filter (on every thread, inherited by all
// children) under which socket(AF_NETLINK, *, NETLINK_NETFILTER) fails with
// EPERM, as it does where nf_tables is missing or forbidden, and then
// executes its arguments. Route netlink and everything else still work.
//
//	nonetfilter PROGRAM [ARG...]
package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nonetfilter PROGRAM [ARG...]")
		os.Exit(2)
	}
	if err := refuseNetfilter(); err != nil {
		fmt.Fprintln(os.Stderr, "nonetfilter:", err)
		os.Exit(1)
	}
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "nonetfilter:", err)
		os.Exit(1)
	}
	err = syscall.Exec(path, os.Args[1:], os.Environ())
	fmt.Fprintln(os.Stderr, "nonetfilter: exec:", err)
	os.Exit(1)
}

// auditArch is the AUDIT_ARCH_* value seccomp reports for this binary.
func auditArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, nil
	}
	return 0, fmt.Errorf("no seccomp filter for %s", runtime.GOARCH)
}

func refuseNetfilter() error {
	arch, err := auditArch()
	if err != nil {
		return err
	}
	// Offsets into struct seccomp_data: nr 0, arch 4, args[i] 16+8i (the
	// low 32 bits first, little-endian).
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: ldAbs, K: 4},
		{Code: jeq, K: arch, Jt: 0, Jf: 6},
		{Code: ldAbs, K: 0},
		{Code: jeq, K: unix.SYS_SOCKET, Jt: 0, Jf: 4},
		{Code: ldAbs, K: 16},
		{Code: jeq, K: unix.AF_NETLINK, Jt: 0, Jf: 2},
		{Code: ldAbs, K: 32},
		{Code: jeq, K: unix.NETLINK_NETFILTER, Jt: 1, Jf: 0},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// no_new_privs is per thread, and seccomp checks the calling one: both
	// calls must run on the same thread (TSYNC then gives the filter, and
	// no_new_privs, to the others).
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}
