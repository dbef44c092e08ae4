package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestExitCodes: osandbox exits with the command's status, 128+N when it
// died of signal N, and 126/127 when it could not be run, as docker run does.
func TestExitCodes(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		noexec := sb.file(t, "noexec.sh", "#!/bin/sh\nexit 0\n") // mode 0644
		cases := []struct {
			name    string
			command []string
			want    int
			stderr  string // a substring osandbox's stderr must have
		}{
			{"exit 0", []string{"sh", "-c", "exit 0"}, 0, ""},
			{"exit 3", []string{"sh", "-c", "exit 3"}, 3, ""},
			{"not executable", []string{noexec}, 126, noexec},
			{"not found", []string{"osandbox-e2e-no-such-command"}, 127, "command not found"},
			{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, ""},
			{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9, ""},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := sb.run(t, nil, c.command...)
				r.wantCode(t, c.want)
				if !strings.Contains(r.stderr, c.stderr) {
					t.Errorf("stderr lacks %q:\n%s", c.stderr, r.stderr)
				}
				// A command that never started may leave no audit log; one
				// that did must have its status in the exit event.
				if c.want < 126 || r.log != nil {
					r.wantExit(t, c.want)
				}
			})
		}
	})
}

// TestSignalForwarding: SIGTERM, SIGINT and SIGHUP sent to osandbox reach
// the command, osandbox exits with the command's status (128+N when the
// signal killed it), and the audit log is complete: every line decodes and
// the last is the exit event.
func TestSignalForwarding(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		cases := []struct {
			name string
			sig  syscall.Signal
			trap string // sh's name for sig, to trap it and exit with want; "": no trap
			want int
		}{
			{"SIGTERM", syscall.SIGTERM, "TERM", 42},
			{"SIGINT", syscall.SIGINT, "INT", 41},
			{"SIGHUP", syscall.SIGHUP, "HUP", 40},
			{"SIGTERM untrapped", syscall.SIGTERM, "", 128 + 15},
			{"SIGINT untrapped", syscall.SIGINT, "", 128 + 2},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				ready := sb.path(fmt.Sprintf("ready-%d", i))
				// Once the marker exists, the trap is set (or sleep runs).
				script := fmt.Sprintf("touch %s; exec sleep 60", ready)
				if c.trap != "" {
					script = fmt.Sprintf(`trap "exit %d" %s; touch %s; while :; do sleep 0.1; done`, c.want, c.trap, ready)
				}
				p := sb.start(t, nil, "sh", "-c", script)
				p.awaitFile(ready)
				p.signal(c.sig)
				r := p.wait()
				r.wantCode(t, c.want)
				r.wantExit(t, c.want)
			})
		}
	})
}

// TestStdio: stdin, stdout and stderr reach the command and come back
// byte for byte.
func TestStdio(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		input := make([]byte, 1<<20)
		for i := range input {
			input[i] = byte(i * 7) // every byte value, NUL and newlines included
		}
		p := sb.startWithInput(t, bytes.NewReader(input), nil, "sh", "-c", "cat; echo to-stderr >&2")
		r := p.wait()
		r.wantCode(t, 0)
		if r.stdout != string(input) {
			t.Errorf("stdout differs from stdin: %d bytes back, want %d", len(r.stdout), len(input))
		}
		if !strings.Contains(r.stderr, "to-stderr\n") {
			t.Errorf("stderr lacks the command's line:\n%s", r.stderr)
		}
	})
}

// TestMalformedPolicy: a policy file that does not parse stops osandbox
// with 125 and a FILE:LINE:COLUMN message before the command runs.
func TestMalformedPolicy(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		cases := []struct {
			name   string
			policy string
			line   int
		}{
			{"unknown field", "version: 1\nallow:\n  - nme: x\n    hosts: [a.example]\n", 3},
			{"bad glob", "version: 1\nallow:\n  - name: x\n    hosts: [\"a.*.example\"]\n", 4},
			{"port out of range", "version: 1\nallow:\n  - name: x\n    hosts: [a.example]\n    ports: [70000]\n", 5},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				file := sb.file(t, fmt.Sprintf("bad-%d.yaml", i), c.policy)
				ran := sb.path(fmt.Sprintf("ran-%d", i))
				r := sb.run(t, []string{"--policy", file}, "touch", ran)
				r.wantCode(t, 125)
				pos := regexp.MustCompile(regexp.QuoteMeta(file) + ":" + strconv.Itoa(c.line) + `:[0-9]+: `)
				if !pos.MatchString(r.stderr) {
					t.Errorf("stderr does not match %q:\n%s", pos, r.stderr)
				}
				if _, err := os.Stat(ran); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the command ran (stat %s: %v)", ran, err)
				}
			})
		}
	})
}

// TestIsolation: inside, the only interface is lo; the command cannot gain
// privileges, holds no capabilities as nobody and none of the dropped ones
// as root; and every proxy variable points at the proxy.
func TestIsolation(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		t.Run("only loopback", func(t *testing.T) {
			r := sb.run(t, nil, "cat", "/proc/net/dev")
			r.wantCode(t, 0)
			var ifaces []string
			for _, line := range strings.Split(r.stdout, "\n") {
				if name, _, ok := strings.Cut(line, ":"); ok {
					ifaces = append(ifaces, strings.TrimSpace(name))
				}
			}
			if len(ifaces) != 1 || ifaces[0] != "lo" {
				t.Errorf("interfaces %q, want only lo:\n%s", ifaces, r.stdout)
			}
		})

		t.Run("privileges", func(t *testing.T) {
			r := sb.run(t, nil, "cat", "/proc/self/status")
			r.wantCode(t, 0)
			status := procStatus(t, r.stdout)
			if uid := strings.Fields(status["Uid"]); len(uid) == 0 || uid[0] != strconv.Itoa(sb.user.uid()) {
				t.Errorf("the command runs as uid %v, want %d", uid, sb.user.uid())
			}
			if status["NoNewPrivs"] != "1" {
				t.Errorf("NoNewPrivs %q, want 1", status["NoNewPrivs"])
			}
			if amb := capMask(t, status, "CapAmb"); amb != 0 {
				t.Errorf("CapAmb %#x, want 0", amb)
			}
			if sb.user.rootless() {
				if eff := capMask(t, status, "CapEff"); eff != 0 {
					t.Errorf("CapEff %#x, want 0", eff)
				}
				return
			}
			// Root keeps root's file access, but nothing that could reach the
			// host's network namespace or tamper with the sandbox.
			dropped := map[string]uint{"CAP_NET_ADMIN": 12, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
				"CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
			for _, set := range []string{"CapEff", "CapPrm", "CapBnd"} {
				mask := capMask(t, status, set)
				for name, bit := range dropped {
					if mask&(1<<bit) != 0 {
						t.Errorf("%s has %s (%#x)", set, name, mask)
					}
				}
			}
		})

		t.Run("proxy environment", func(t *testing.T) {
			r := sb.run(t, nil, "env")
			r.wantCode(t, 0)
			env := map[string]string{}
			for _, kv := range strings.Split(r.stdout, "\n") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
			want := map[string]string{
				"HTTP_PROXY": "http://127.0.0.1:3128", "HTTPS_PROXY": "http://127.0.0.1:3128",
				"ALL_PROXY": "http://127.0.0.1:3128", "NO_PROXY": "localhost,127.0.0.1,::1",
			}
			for k, v := range want {
				for _, name := range []string{k, strings.ToLower(k)} {
					if env[name] != v {
						t.Errorf("%s=%q, want %q", name, env[name], v)
					}
				}
			}
		})
	})
}

// procStatus parses /proc/PID/status into name -> value.
func procStatus(t *testing.T, text string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// capMask is a capability set from /proc/PID/status.
func capMask(t *testing.T, status map[string]string, set string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(status[set], 16, 64)
	if err != nil {
		t.Fatalf("%s: %v", set, err)
	}
	return v
}
