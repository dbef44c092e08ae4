package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runTimeout bounds every osandbox run, so that a hang fails the test.
const runTimeout = 30 * time.Second

// bin is the osandbox binary under test, in a directory every user can read
// and execute. TestMain builds it, or copies the one OSANDBOX_E2E_BIN names.
var bin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "osandbox-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "osandbox")
	if prebuilt := os.Getenv("OSANDBOX_E2E_BIN"); prebuilt != "" {
		err = copyFile(bin, prebuilt)
	} else {
		err = build(bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: osandbox binary:", err)
		return 1
	}
	// nobody must reach the binary: MkdirTemp made the directory 0700.
	for _, p := range []string{dir, bin} {
		if err := os.Chmod(p, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "e2e: running as uid %d, not root: the cases run as this user only; "+
			"their \"nobody\" variants are skipped\n", os.Geteuid())
	}
	return m.Run()
}

// build compiles the module's main package (the parent directory) to out.
// A race-enabled test binary builds a race-enabled osandbox, so that -race
// also watches the proxy under real traffic.
func build(out string) error {
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "-o", out, ".")...)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, b)
	}
	return nil
}

// copyFile copies the binary at src (OSANDBOX_E2E_BIN: test a binary built
// elsewhere) to dst.
func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// user is who runs osandbox.
type user struct {
	name string
	cred *syscall.Credential // nil: the test process's own
}

var (
	asRoot   = user{name: "root"}
	asNobody = user{name: "nobody", cred: &syscall.Credential{Uid: 65534, Gid: 65534}}
)

// uid is the user id osandbox runs as.
func (u user) uid() int {
	if u.cred != nil {
		return int(u.cred.Uid)
	}
	return os.Geteuid()
}

// rootless says whether osandbox takes the user-namespace path for u.
func (u user) rootless() bool { return u.uid() != 0 }

// forEachUser runs f as subtests "root" and "nobody" when the tests run as
// root; otherwise as the current user, with "nobody" skipped and the reason.
func forEachUser(t *testing.T, f func(t *testing.T, sb *sandbox)) {
	t.Helper()
	users := []user{asRoot, asNobody}
	if os.Geteuid() != 0 {
		users = []user{{name: fmt.Sprintf("uid%d", os.Geteuid())}}
		t.Run("nobody", func(t *testing.T) {
			t.Skipf("the tests run as uid %d, not root: they cannot switch to nobody", os.Geteuid())
		})
	}
	for _, u := range users {
		t.Run(u.name, func(t *testing.T) { f(t, newSandbox(t, u)) })
	}
}

// probes caches, per user, whether osandbox can create its namespaces.
var probes sync.Map // user name -> *probe

type probe struct {
	once sync.Once
	skip string // why this user's variant is skipped; "" = it runs
	fail string // why the probe itself failed unexpectedly
}

// requireSandbox skips t when osandbox cannot create namespaces for u (no
// unprivileged user namespaces); it fails t when the probe fails otherwise.
func requireSandbox(t *testing.T, u user) {
	t.Helper()
	v, _ := probes.LoadOrStore(u.name, &probe{})
	p := v.(*probe)
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		defer cancel()
		cmd := osandboxCmd(ctx, u, "/", "run", "--", "true")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() == 125 && u.rootless():
			p.skip = fmt.Sprintf("osandbox cannot create a user namespace as %s here (exit 125): %s",
				u.name, strings.TrimSpace(stderr.String()))
		default:
			p.fail = fmt.Sprintf("probe `osandbox run -- true` as %s: %v: %s", u.name, err, stderr.String())
		}
	})
	if p.fail != "" {
		t.Fatal(p.fail)
	}
	if p.skip != "" {
		t.Skip(p.skip)
	}
}

// osandboxCmd is the binary run as u in dir with a small fixed environment,
// so the host's proxy variables or HOME cannot change the outcome.
func osandboxCmd(ctx context.Context, u user, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
		"HOME=" + dir,
		"LANG=C",
	}
	if raceEnabled {
		// A race-enabled binary sleeps 1 s at exit by default.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	if u.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	}
	// A grandchild that keeps stdout open must not stall Wait past the timeout.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// sandbox is one user's scratch directory for osandbox runs: everyone may
// write it, so audit logs, markers and the files a command reads live here.
type sandbox struct {
	user user
	dir  string
	runs int
	// wrap, if set, is a program osandbox runs under: wrap BIN ARGS...
	wrap string
}

func newSandbox(t *testing.T, u user) *sandbox {
	t.Helper()
	requireSandbox(t, u)
	dir, err := os.MkdirTemp("", "osandbox-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return &sandbox{user: u, dir: dir}
}

// path is name inside the scratch directory.
func (sb *sandbox) path(name string) string { return filepath.Join(sb.dir, name) }

// file writes a world-readable file into the scratch directory.
func (sb *sandbox) file(t *testing.T, name, content string) string {
	t.Helper()
	p := sb.path(name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// process is a running `osandbox run`.
type process struct {
	t              *testing.T
	cmd            *exec.Cmd
	ctx            context.Context
	cancel         context.CancelFunc
	stdout, stderr bytes.Buffer
	auditPath      string
	started        time.Time
}

// start runs `osandbox run FLAGS --audit-log FILE -- COMMAND` in the
// background, stdin empty; each run gets an audit log of its own.
func (sb *sandbox) start(t *testing.T, flags []string, command ...string) *process {
	t.Helper()
	return sb.startWithInput(t, nil, flags, command...)
}

// startWithInput is start with stdin read from input (nil: /dev/null).
func (sb *sandbox) startWithInput(t *testing.T, input io.Reader, flags []string, command ...string) *process {
	t.Helper()
	sb.runs++
	p := &process{t: t, auditPath: sb.path(fmt.Sprintf("audit-%d.jsonl", sb.runs))}
	p.ctx, p.cancel = context.WithTimeout(context.Background(), runTimeout)
	args := append([]string{"run"}, flags...)
	args = append(args, "--audit-log", p.auditPath, "--")
	p.cmd = osandboxCmd(p.ctx, sb.user, sb.dir, append(args, command...)...)
	if sb.wrap != "" {
		p.cmd.Path, p.cmd.Args = sb.wrap, append([]string{sb.wrap, bin}, p.cmd.Args[1:]...)
	}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = input, &p.stdout, &p.stderr
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		p.cancel()
		t.Fatalf("start osandbox: %v", err)
	}
	return p
}

// run is start and wait.
func (sb *sandbox) run(t *testing.T, flags []string, command ...string) *result {
	t.Helper()
	return sb.start(t, flags, command...).wait()
}

// signal sends sig to osandbox itself (not to the command).
func (p *process) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal osandbox: %v", err)
	}
}

// awaitFile waits until the command has created path.
func (p *process) awaitFile(path string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.cancel()
			_ = p.cmd.Wait() // the stderr buffer is ours once Wait returns
			p.t.Fatalf("the command did not create %s within 10s\nstderr:\n%s", path, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the run and reads its audit log (absent when osandbox
// stopped before opening it). It fails the test on a timeout or on an
// audit log that does not decode.
func (p *process) wait() *result {
	t := p.t
	t.Helper()
	defer p.cancel()
	err := p.cmd.Wait()
	r := &result{
		code: p.cmd.ProcessState.ExitCode(), state: p.cmd.ProcessState.String(),
		stdout: p.stdout.String(), stderr: p.stderr.String(), elapsed: time.Since(p.started),
	}
	if p.ctx.Err() != nil {
		t.Fatalf("osandbox %q did not finish within %s\nstderr:\n%s", p.cmd.Args, runTimeout, r.stderr)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("osandbox %q: %v", p.cmd.Args, err)
	}
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Errorf("osandbox %q has a data race:\n%s", p.cmd.Args, r.stderr)
	}
	if r.log, err = readAudit(p.auditPath); err != nil {
		t.Fatal(err)
	}
	return r
}
