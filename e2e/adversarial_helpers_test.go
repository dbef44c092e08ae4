package e2e

// Helpers for the adversarial tests (bypass_test.go, faults_test.go):
// Python clients that write requests byte for byte from inside the
// sandbox, raw DNS queries, a server that echoes the headers it got, and
// host-side listeners that count what reaches them.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// rawExchangeScript connects to argv[1] (HOST:PORT; HOST may be a name the
// DNS stub answers) once per file in argv[2:], sends the file's bytes, and
// reads until the connection closes or stays quiet for 5 s. It prints a
// JSON list with what each connection returned, bytes as latin-1, or
// "<connect error ERRNO>", "<error ERRNO>" and "<timeout>" markers.
const rawExchangeScript = `import errno, json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
out = []
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    try:
        s = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
    except OSError as e:
        out.append("<connect error %s>" % errno.errorcode.get(e.errno, e.errno))
        continue
    buf = b""
    try:
        s.sendall(data)
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    except socket.timeout:
        buf += b"<timeout>"
    except OSError as e:
        buf += ("<error %s>" % errno.errorcode.get(e.errno, e.errno)).encode()
    s.close()
    out.append(buf.decode("latin-1"))
print(json.dumps(out))
`

// rawExchanges runs rawExchangeScript inside the sandbox against addr, one
// connection per request, and returns the run and what each connection
// got back.
func (sb *sandbox) rawExchanges(t *testing.T, flags []string, addr string, requests ...string) (*result, []string) {
	t.Helper()
	args := []string{"python3", "-c", rawExchangeScript, addr}
	for i, req := range requests {
		sb.runs++
		args = append(args, sb.file(t, fmt.Sprintf("raw-%d-%d.bin", sb.runs, i), req))
	}
	r := sb.run(t, flags, args...)
	r.wantCode(t, 0)
	var got []string
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != len(requests) {
		t.Fatalf("raw exchanges: %v; stdout %q\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	return r, got
}

// exchanged is one response read from a raw exchange, with its body.
type exchanged struct {
	status int
	header http.Header
	body   string
}

// responses parses the responses in raw, in order: after a CONNECT's 200
// the next one is the response inside the tunnel.
func responses(t *testing.T, raw string, methods ...string) []exchanged {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(raw))
	var out []exchanged
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("response %d to %s: %v\nraw: %q", len(out)+1, m, err, raw)
		}
		if m == http.MethodConnect && resp.StatusCode == http.StatusOK {
			// The tunnel's bytes follow; they are not this response's body.
			out = append(out, exchanged{resp.StatusCode, resp.Header, ""})
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		out = append(out, exchanged{resp.StatusCode, resp.Header, string(b)})
		if m == http.MethodConnect {
			break
		}
	}
	return out
}

// dnsQueryScript sends one DNS query per argument SERVER,NAME,TYPE (TYPE
// A, AAAA or TXT) over UDP from a connected socket, and prints a JSON list
// of {rcode, id_ok, addrs} or {error}.
const dnsQueryScript = `import errno, json, random, socket, struct, sys
def query(server, name, qtype):
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", {"A": 1, "AAAA": 28, "TXT": 16}[qtype], 1)
    host, port = server.rsplit(":", 1)
    host = host.strip("[]")
    try:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((host, int(port)))
        s.send(q)
        resp = s.recv(4096)
    except socket.timeout:
        return {"error": "timeout"}
    except OSError as e:
        return {"error": errno.errorcode.get(e.errno, str(e.errno))}
    rid, flags, qd, an = struct.unpack("!HHHH", resp[:8])
    out = {"rcode": flags & 0xf, "id_ok": rid == qid, "addrs": []}
    i = 12
    while resp[i]:
        i += resp[i] + 1
    i += 5
    for _ in range(an):
        if resp[i] & 0xc0 == 0xc0:
            i += 2
        else:
            while resp[i]:
                i += resp[i] + 1
            i += 1
        t, _, _, ln = struct.unpack("!HHIH", resp[i:i + 10])
        i += 10
        if t == 1:
            out["addrs"].append(socket.inet_ntoa(resp[i:i + 4]))
        i += ln
    return out
print(json.dumps([query(*spec.split(",")) for spec in sys.argv[1:]]))
`

// dnsAnswer is one answer dnsQueryScript printed.
type dnsAnswer struct {
	Rcode *int     `json:"rcode"`
	IDOK  bool     `json:"id_ok"`
	Addrs []string `json:"addrs"`
	Error string   `json:"error"`
}

// headerEcho is a server on 127.0.0.1 (TLS when started with a host name)
// that records the Host and headers of each request by path and answers
// with hop-by-hop headers of its own, which no client may see.
type headerEcho struct {
	*httptest.Server
	port int
	mu   sync.Mutex
	seen map[string]*http.Request
}

func newHeaderEcho(t *testing.T, tlsHost string) (*headerEcho, string) {
	t.Helper()
	e := &headerEcho{seen: map[string]*http.Request{}}
	e.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.seen[r.URL.Path] = r.Clone(r.Context())
		e.mu.Unlock()
		h := w.Header()
		h.Set("Connection", "X-Internal")
		h.Set("X-Internal", "1")
		h.Set("Proxy-Authenticate", `Basic realm="upstream"`)
		h.Set("X-Visible", "1")
		fmt.Fprintf(w, "host=%s\n", r.Host)
	}))
	e.Listener.Close()
	e.Listener = loopbackListener(t)
	var certPEM string
	if tlsHost != "" {
		var cert tls.Certificate
		cert, certPEM = selfSigned(t, tlsHost)
		e.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		e.StartTLS()
	} else {
		e.Start()
	}
	t.Cleanup(e.Close)
	e.port = e.Listener.Addr().(*net.TCPAddr).Port
	return e, certPEM
}

// request is what the server got at path; nil if nothing came.
func (e *headerEcho) request(path string) *http.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[path]
}

func (e *headerEcho) hosts() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for p, r := range e.seen {
		out = append(out, p+" "+r.Host)
	}
	return out
}

// udpCounter is a host UDP socket that counts the datagrams reaching it.
type udpCounter struct {
	pc   net.PacketConn
	port int
	got  atomic.Int64
}

// newUDPCounter listens on addr; it returns nil when it cannot (no IPv6
// on this host, say).
func newUDPCounter(t *testing.T, network, addr string) *udpCounter {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Logf("listen %s %s: %v", network, addr, err)
		return nil
	}
	u := &udpCounter{pc: pc, port: pc.LocalAddr().(*net.UDPAddr).Port}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
			u.got.Add(1)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return u
}

// tcpCounter is a host TCP listener that counts the connections it
// accepts and writes a greeting on each.
type tcpCounter struct {
	ln       net.Listener
	port     int
	accepted atomic.Int64
}

// newTCPCounter listens on addr; it returns nil when it cannot.
func newTCPCounter(t *testing.T, network, addr string) *tcpCounter {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Logf("listen %s %s: %v", network, addr, err)
		return nil
	}
	c := &tcpCounter{ln: ln}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		c.port = ta.Port
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			io.WriteString(conn, "hello from the host\n")
			conn.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return c
}

// probeScript runs each argument NAME=CODE as Python socket code and
// prints a JSON object NAME -> outcome: the errno's name when the code
// raised OSError ("timeout" for a timeout), else what the code left in
// the variable out ("ok" if it left nothing).
const probeScript = `import errno, json, socket, sys
res = {}
for arg in sys.argv[1:]:
    name, code = arg.split("=", 1)
    env = {"socket": socket, "out": "ok"}
    try:
        exec(code, env)
        res[name] = env["out"]
    except socket.timeout:
        res[name] = "timeout"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
`

// probes runs probeScript in the sandbox and returns its outcomes.
func (sb *sandbox) probes(t *testing.T, flags []string, probes map[string]string) (*result, map[string]string) {
	t.Helper()
	args := []string{"python3", "-c", probeScript}
	for name, code := range probes {
		args = append(args, name+"="+code)
	}
	r := sb.run(t, flags, args...)
	r.wantCode(t, 0)
	got := map[string]string{}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("probe output %q: %v\nstderr:\n%s", r.stdout, err, r.stderr)
	}
	return r, got
}

// execCommand is name run as u outside any sandbox.
func execCommand(u user, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if u.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	}
	return cmd
}
