package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Statuses of a doctor check.
const (
	statusWorks     = "works"
	statusFallsBack = "falls back" // run works without it, with less
	statusMissing   = "missing"
)

// check is one line of the doctor's report.
type check struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
	// Required: run cannot work on this host without it.
	Required bool `json:"required"`
}

// doctorEnv is everything the doctor looked at; diagnose turns it into
// checks without looking at anything itself.
type doctorEnv struct {
	Kernel string `json:"kernel"`
	UID    int    `json:"uid"`
	// Sysctl holds the settings that gate namespaces, by sysctl name;
	// absent when the kernel has no such setting.
	Sysctl map[string]string `json:"sysctl"`
	// Conntrack: nf_conntrack is loaded on the host.
	Conntrack bool `json:"conntrack"`
	// Rootless probes user+net namespaces, as this user or, for root, as
	// nobody (what an ordinary user would meet).
	Rootless   probeResult `json:"rootless"`
	RootlessAs string      `json:"rootless_as"`
	// Root probes a network namespace alone, the path root takes; nil
	// when not running as root.
	Root        *probeResult `json:"root,omitempty"`
	LandlockABI int          `json:"landlock_abi"` // 0: unavailable
	LandlockErr string       `json:"landlock_error,omitempty"`
}

// The sysctls that can block user or network namespaces.
var gatingSysctls = []string{
	"kernel.unprivileged_userns_clone",             // Debian and older Ubuntu kernels
	"kernel.apparmor_restrict_unprivileged_userns", // Ubuntu 23.10+
	"user.max_user_namespaces",
	"user.max_net_namespaces",
}

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check which kernel features osandbox can use here, and what to do if not",
		Description: "Examples:\n" +
			"   osandbox doctor\n" +
			"   osandbox doctor --json | jq '.checks[] | select(.status != \"works\")'\n\n" +
			"It probes for real: it starts a child in fresh namespaces and tries what run does there\n" +
			"(loopback, a listener, nf_tables rules, SO_ORIGINAL_DST), and reads the sysctls that can\n" +
			"block user namespaces. As root it probes root's path (a network namespace alone) and,\n" +
			"as the user nobody, the rootless path. For each feature it prints works, falls back or\n" +
			"missing, and the command that fixes it.\n\n" +
			"Exit status: 0 when run works here (perhaps without transparent capture), 1 when it cannot.",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the findings as JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError(c, "takes no arguments")
			}
			env := gatherDoctorEnv()
			checks := diagnose(env)
			ok := runWorks(checks)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				enc.Encode(struct {
					RunWorks bool      `json:"run_works"`
					Checks   []check   `json:"checks"`
					Env      doctorEnv `json:"env"`
				}{ok, checks, env})
			} else {
				writeDoctorReport(c.App.Writer, env, checks)
			}
			if !ok {
				return cli.Exit("doctor: osandbox run cannot work here; see the fixes above", 1)
			}
			return nil
		},
	}
}

func gatherDoctorEnv() doctorEnv {
	env := doctorEnv{UID: os.Geteuid(), Sysctl: map[string]string{}}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		env.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	for _, name := range gatingSysctls {
		if b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/")); err == nil {
			env.Sysctl[name] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range []string{"/proc/net/nf_conntrack", "/sys/module/nf_conntrack"} {
		if _, err := os.Stat(p); err == nil {
			env.Conntrack = true
		}
	}
	if env.UID == 0 {
		r := startProbe(false, nil)
		env.Root = &r
		env.Rootless = startProbe(true, &syscall.Credential{Uid: 65534, Gid: 65534})
		env.RootlessAs = "nobody"
	} else {
		env.Rootless = startProbe(true, nil)
		env.RootlessAs = fmt.Sprintf("uid %d", env.UID)
	}
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	switch {
	case errno == 0:
		env.LandlockABI = int(abi)
	case errors.Is(errno, unix.ENOSYS):
		env.LandlockErr = "the kernel has no Landlock (Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)"
	case errors.Is(errno, unix.EOPNOTSUPP):
		env.LandlockErr = "Landlock is built in but not enabled at boot"
	default:
		env.LandlockErr = errno.Error()
	}
	return env
}

// namespaceOK says whether a probe got as far as run needs: namespaces
// created, loopback up, a listener inside.
func namespaceOK(r probeResult) bool {
	return r.Start == "" && r.Loopback == "" && r.Listen == ""
}

// firstFailure is the first step of r that failed, as "step: error".
func firstFailure(r probeResult) string {
	for _, s := range []struct{ step, err string }{
		{"start", r.Start}, {"bring lo up", r.Loopback}, {"listen on 127.0.0.1", r.Listen},
	} {
		if s.err != "" {
			return s.step + ": " + s.err
		}
	}
	return ""
}

// diagnose turns what the doctor saw into checks. It is pure.
func diagnose(env doctorEnv) []check {
	var checks []check
	userns := check{Name: "unprivileged user namespaces (the rootless path)", Required: env.Root == nil}
	var settings []string
	for _, name := range gatingSysctls {
		if v, ok := env.Sysctl[name]; ok {
			settings = append(settings, name+"="+v)
		}
	}
	if len(settings) == 0 {
		settings = append(settings, "no gating sysctls on this kernel")
	}
	if namespaceOK(env.Rootless) {
		userns.Status = statusWorks
		userns.Detail = fmt.Sprintf("%s; probe as %s: user and network namespaces created, lo up, listener opened",
			strings.Join(settings, ", "), env.RootlessAs)
	} else {
		userns.Status = statusMissing
		userns.Detail = fmt.Sprintf("%s; probe as %s failed at %s", strings.Join(settings, ", "), env.RootlessAs, firstFailure(env.Rootless))
		userns.Fix = usernsFix(env)
		if env.Root != nil && strings.Contains(env.Rootless.Start, "permission denied") {
			// The exec as nobody failed, not the namespaces.
			userns.Detail = "not probed: nobody cannot execute this osandbox binary (" + env.Rootless.Start + ")"
			userns.Fix = "install osandbox where every user can run it (e.g. /usr/local/bin) and run doctor again"
		}
	}
	checks = append(checks, userns)

	path, pathName := env.Rootless, "the rootless sandbox"
	if env.Root != nil {
		path, pathName = *env.Root, "root's sandbox"
		root := check{Name: "network namespace (root's path: no user namespace)", Required: true}
		if namespaceOK(*env.Root) {
			root.Status, root.Detail = statusWorks, "probe: network namespace created, lo up, listener opened"
		} else {
			root.Status, root.Detail = statusMissing, "probe failed at "+firstFailure(*env.Root)
			root.Fix = "run osandbox with CAP_SYS_ADMIN and CAP_NET_ADMIN (in a container: --cap-add SYS_ADMIN --cap-add NET_ADMIN), or as an ordinary user with user namespaces"
		}
		checks = append(checks, root)
	}

	nft := check{Name: "nf_tables in " + pathName + " (transparent capture)"}
	const modprobe = "sudo modprobe -a nf_tables nft_chain_nat nft_redir nft_reject_inet nf_conntrack (and list them in /etc/modules-load.d/osandbox.conf)"
	switch {
	case !namespaceOK(path):
		nft.Status, nft.Detail = statusMissing, "not probed: the namespace itself does not work"
	case path.NFTables != "":
		nft.Status, nft.Detail, nft.Fix = statusFallsBack, "cannot create an nf_tables table: "+path.NFTables+captureOff, modprobe
	case path.NFTNat != "" || path.NFTReject != "":
		failed := strings.TrimPrefix(path.NFTNat+"; "+path.NFTReject, "; ")
		nft.Status, nft.Detail, nft.Fix = statusFallsBack, "nat redirect or reject rules refused: "+strings.TrimSuffix(failed, "; ")+captureOff, modprobe
	default:
		nft.Status, nft.Detail = statusWorks, "table, nat redirect and reject rules created over netlink"
	}
	checks = append(checks, nft)

	odst := check{Name: "SO_ORIGINAL_DST (naming captured connections)"}
	conntrack := "nf_conntrack is not loaded on the host"
	if env.Conntrack {
		conntrack = "nf_conntrack is loaded"
	}
	switch {
	case !namespaceOK(path):
		odst.Status, odst.Detail = statusMissing, "not probed: the namespace itself does not work"
	case path.OriginalDst == "":
		odst.Status, odst.Detail = statusWorks, conntrack+"; a redirected connection reported its original destination"
	case path.OriginalDst == "skipped":
		odst.Status, odst.Detail, odst.Fix = statusFallsBack, conntrack+"; not probed: needs the nat redirect rule"+captureOff, modprobe
	default:
		odst.Status, odst.Detail, odst.Fix = statusFallsBack, conntrack+"; "+path.OriginalDst+captureOff, "sudo modprobe -a nf_conntrack nf_nat"
	}
	checks = append(checks, odst)

	ll := check{Name: "Landlock (not needed by run today)"}
	if env.LandlockABI > 0 {
		ll.Status, ll.Detail = statusWorks, fmt.Sprintf("ABI version %d", env.LandlockABI)
	} else {
		ll.Status, ll.Detail = statusMissing, env.LandlockErr
		ll.Fix = "add landlock to the lsm= kernel parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf) and reboot; needs Linux 5.13+"
	}
	return append(checks, ll)
}

// captureOff is what losing transparent capture means for a run.
const captureOff = "; run still works through the proxy variables, but a program that ignores HTTP_PROXY cannot connect at all (it fails closed)"

// usernsFix names the setting that most likely blocks user namespaces.
func usernsFix(env doctorEnv) string {
	s := env.Sysctl
	switch {
	case s["kernel.unprivileged_userns_clone"] == "0":
		return "sudo sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d/99-osandbox.conf)"
	case s["user.max_user_namespaces"] == "0":
		return "sudo sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/99-osandbox.conf)"
	case s["user.max_net_namespaces"] == "0":
		return "sudo sysctl -w user.max_net_namespaces=15000 (persist it in /etc/sysctl.d/99-osandbox.conf)"
	case s["kernel.apparmor_restrict_unprivileged_userns"] == "1":
		return "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or let osandbox alone have them: an AppArmor profile " +
			"for its path with \"userns,\" (profile osandbox /usr/local/bin/osandbox flags=(unconfined) { userns, }) in /etc/apparmor.d/osandbox, then sudo apparmor_parser -r /etc/apparmor.d/osandbox"
	}
	return "no sysctl explains it: a container runtime or seccomp profile may forbid user namespaces (in Docker: --security-opt seccomp=unconfined, or run osandbox as root with CAP_SYS_ADMIN)"
}

// runWorks: every required check works.
func runWorks(checks []check) bool {
	for _, c := range checks {
		if c.Required && c.Status != statusWorks {
			return false
		}
	}
	return true
}

func writeDoctorReport(w io.Writer, env doctorEnv, checks []check) {
	fmt.Fprintf(w, "osandbox doctor: %s, uid %d\n\n", env.Kernel, env.UID)
	for _, c := range checks {
		fmt.Fprintf(w, "%-10s  %s\n", c.Status, c.Name)
		fmt.Fprintf(w, "%-10s  %s\n", "", c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(w, "%-10s  fix: %s\n", "", c.Fix)
		}
	}
	fmt.Fprintln(w)
	path := "rootless: user and network namespaces"
	if env.Root != nil {
		path = "as root: a network namespace alone"
	}
	if runWorks(checks) {
		fmt.Fprintf(w, "run: works here (%s)\n", path)
	} else {
		fmt.Fprintln(w, "run: cannot work here")
	}
}
