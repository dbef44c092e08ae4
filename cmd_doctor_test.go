package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestDiagnose(t *testing.T) {
	ok := probeResult{}
	lo := probeResult{Loopback: "bring lo up: operation not permitted", NFTables: "skipped", NFTNat: "skipped", NFTReject: "skipped", OriginalDst: "skipped"}
	noNFT := probeResult{NFTables: "netlink receive: protocol not supported", NFTNat: "skipped", NFTReject: "skipped", OriginalDst: "skipped"}
	noRedir := probeResult{NFTNat: "netlink receive: no such file or directory", OriginalDst: "skipped"}
	noOdst := probeResult{OriginalDst: "getsockopt SO_ORIGINAL_DST: no such file or directory"}
	start := probeResult{Start: "fork/exec /usr/bin/osandbox: operation not permitted"}
	base := func(s map[string]string) doctorEnv {
		return doctorEnv{Kernel: "Linux 6.8", UID: 1000, Sysctl: s, Conntrack: true, RootlessAs: "uid 1000", LandlockABI: 4}
	}
	with := func(e doctorEnv, f func(*doctorEnv)) doctorEnv { f(&e); return e }
	cases := []struct {
		name     string
		env      doctorEnv
		runWorks bool
		statuses []string // per check, in order
		fix      string   // a substring of some fix
	}{
		{"all works", with(base(map[string]string{"user.max_user_namespaces": "63000"}), func(e *doctorEnv) { e.Rootless = ok }),
			true, []string{statusWorks, statusWorks, statusWorks, statusWorks}, ""},
		{"Ubuntu 24.04 AppArmor restriction", with(base(map[string]string{"kernel.apparmor_restrict_unprivileged_userns": "1"}), func(e *doctorEnv) { e.Rootless = lo }),
			false, []string{statusMissing, statusMissing, statusMissing, statusWorks}, "kernel.apparmor_restrict_unprivileged_userns=0"},
		{"Debian switch off", with(base(map[string]string{"kernel.unprivileged_userns_clone": "0"}), func(e *doctorEnv) { e.Rootless = start }),
			false, []string{statusMissing, statusMissing, statusMissing, statusWorks}, "kernel.unprivileged_userns_clone=1"},
		{"no user namespaces allowed", with(base(map[string]string{"user.max_user_namespaces": "0"}), func(e *doctorEnv) { e.Rootless = start }),
			false, []string{statusMissing, statusMissing, statusMissing, statusWorks}, "user.max_user_namespaces=15000"},
		{"blocked by something else", with(base(nil), func(e *doctorEnv) { e.Rootless = start }),
			false, []string{statusMissing, statusMissing, statusMissing, statusWorks}, "seccomp"},
		{"no nf_tables: capture falls back", with(base(nil), func(e *doctorEnv) { e.Rootless = noNFT }),
			true, []string{statusWorks, statusFallsBack, statusFallsBack, statusWorks}, "modprobe -a nf_tables"},
		{"no redirect", with(base(nil), func(e *doctorEnv) { e.Rootless = noRedir }),
			true, []string{statusWorks, statusFallsBack, statusFallsBack, statusWorks}, "nft_redir"},
		{"no conntrack", with(base(nil), func(e *doctorEnv) { e.Rootless = noOdst; e.Conntrack = false }),
			true, []string{statusWorks, statusWorks, statusFallsBack, statusWorks}, "modprobe -a nf_conntrack"},
		{"no landlock does not matter", with(base(nil), func(e *doctorEnv) { e.Rootless = ok; e.LandlockABI = 0; e.LandlockErr = "x" }),
			true, []string{statusWorks, statusWorks, statusWorks, statusMissing}, "lsm="},
		{"root: user namespaces for others are only advice", with(base(nil), func(e *doctorEnv) { e.UID = 0; e.Root = &noNFT; e.Rootless = lo }),
			true, []string{statusMissing, statusWorks, statusFallsBack, statusFallsBack, statusWorks}, ""},
		{"root: nobody cannot run the binary", with(base(nil), func(e *doctorEnv) {
			e.UID = 0
			e.Root = &ok
			e.Rootless = probeResult{Start: "fork/exec /root/osandbox: permission denied"}
		}), true, []string{statusMissing, statusWorks, statusWorks, statusWorks, statusWorks}, "/usr/local/bin"},
		{"root without CAP_SYS_ADMIN", with(base(nil), func(e *doctorEnv) { e.UID = 0; e.Root = &start; e.Rootless = ok }),
			false, []string{statusWorks, statusMissing, statusMissing, statusMissing, statusWorks}, "--cap-add SYS_ADMIN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checks := diagnose(c.env)
			var got []string
			var fixes strings.Builder
			for _, ch := range checks {
				got = append(got, ch.Status)
				fixes.WriteString(ch.Fix + "\n")
				if ch.Status != statusWorks && ch.Fix == "" && !strings.HasPrefix(ch.Detail, "not probed") {
					t.Errorf("%s is %s but has no fix", ch.Name, ch.Status)
				}
			}
			if strings.Join(got, ",") != strings.Join(c.statuses, ",") {
				t.Errorf("statuses %q, want %q", got, c.statuses)
			}
			if runWorks(checks) != c.runWorks {
				t.Errorf("run works = %v, want %v", runWorks(checks), c.runWorks)
			}
			if !strings.Contains(fixes.String(), c.fix) {
				t.Errorf("no fix mentions %q:\n%s", c.fix, fixes.String())
			}
			var out bytes.Buffer
			writeDoctorReport(&out, c.env, checks)
			verdict := "run: cannot work here"
			if c.runWorks {
				verdict = "run: works here"
			}
			if !strings.Contains(out.String(), verdict) {
				t.Errorf("report lacks %q:\n%s", verdict, out.String())
			}
		})
	}
}
