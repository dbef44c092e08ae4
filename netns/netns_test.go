package netns

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary serve as its own init, as osandbox's main
// does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitArg {
		RunInit(os.Args)
	}
	os.Exit(m.Run())
}

// start runs argv in a sandbox with one TCP and one UDP socket, skipping
// when this host cannot create the namespaces.
func start(t *testing.T, argv ...string) *Sandbox {
	t.Helper()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		t.Skipf("%s not installed", argv[0])
	}
	sb, err := Start(Config{
		Path: path, Args: argv, Env: os.Environ(),
		Stdin: nil, Stdout: os.Stdout, Stderr: os.Stderr,
		Listen:  []Endpoint{{Network: "tcp", Addr: "127.0.0.1:3128"}, {Network: "udp", Addr: "127.0.0.1:3153"}},
		Capture: &Capture{TCPPort: 3128, DNSPort: 3153},
	})
	if err != nil {
		if strings.Contains(err.Error(), "operation not permitted") {
			t.Skipf("namespaces unavailable here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(sb.closeSockets)
	return sb
}

func TestHandOffAndExit(t *testing.T) {
	sb := start(t, "bash", "-c", "echo hello >/dev/tcp/127.0.0.1/3128 && exit 7")
	if len(sb.Listeners) != 1 || len(sb.PacketConns) != 1 {
		t.Fatalf("got %d listeners and %d packet conns", len(sb.Listeners), len(sb.PacketConns))
	}
	for _, w := range sb.Warnings {
		t.Logf("warning: %s", w)
	}
	// The command connects inside its namespace; we accept on the host side.
	accepted := make(chan string, 1)
	go func() {
		c, err := sb.Listeners[0].Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		accepted <- string(b)
	}()
	code, err := sb.Wait()
	if err != nil || code != 7 {
		t.Fatalf("Wait = %d, %v; want 7", code, err)
	}
	select {
	case got := <-accepted:
		if got != "hello\n" {
			t.Fatalf("listener got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the command's connection never reached the handed-over listener")
	}
}

func TestDeathBySignal(t *testing.T) {
	sb := start(t, "sleep", "30")
	if err := sb.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := sb.Wait()
	if err != nil || code != 128+int(syscall.SIGTERM) {
		t.Fatalf("Wait = %d, %v; want %d", code, err, 128+int(syscall.SIGTERM))
	}
}

func TestPrivilegesDropped(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	path, _ := exec.LookPath("cat")
	sb, err := Start(Config{Path: path, Args: []string{"cat", "/proc/self/status"}, Env: os.Environ(), Stdout: w, Stderr: os.Stderr,
		Listen: []Endpoint{{Network: "tcp", Addr: "127.0.0.1:3128"}}})
	w.Close()
	if err != nil {
		t.Skipf("namespaces unavailable here: %v", err)
	}
	defer sb.closeSockets()
	status, _ := io.ReadAll(r)
	if _, err := sb.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NoNewPrivs:\t1", "CapAmb:\t0000000000000000", "CapInh:\t0000000000000000"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
}
