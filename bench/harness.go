package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mode is one way of running a client.
type mode string

const (
	direct mode = "direct"   // client to server, no proxy
	bare   mode = "bare"     // through the harness's io.Copy relay
	osb    mode = "osandbox" // client inside `osandbox run`
)

var allModes = []mode{direct, bare, osb}

// harness holds what every measurement shares: the origin servers, the
// bare relay, the policies osandbox runs with, the knobs.
type harness struct {
	k        knobs
	self     string // this binary, also the client
	osandbox string
	dir      string // temporary files: certificate, policies, audit logs
	info     serverInfo
	serve    *child
	relay    *child
	relayURL string
	runs     int // osandbox runs so far, names the audit logs
}

// clientTimeout bounds one client run, hold pauses included.
const clientTimeout = 15 * time.Minute

func newHarness(k knobs, osandboxPath string) (*harness, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	osbPath, err := filepath.Abs(osandboxPath)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(osbPath); err != nil {
		return nil, fmt.Errorf("osandbox binary: %w (build it first: make build)", err)
	}
	dir, err := os.MkdirTemp("", "osbench-")
	if err != nil {
		return nil, err
	}
	h := &harness{k: k, self: self, osandbox: osbPath, dir: dir}
	if err := h.start(); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *harness) start() error {
	var err error
	if h.serve, err = startChild(h.self, "serve", "-dir", h.dir); err != nil {
		return err
	}
	line, err := h.serve.readLine(time.Minute)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(line), &h.info); err != nil {
		return fmt.Errorf("serve said %q: %w", line, err)
	}
	if h.relay, err = startChild(h.self, "relay"); err != nil {
		return err
	}
	addr, err := h.relay.readLine(time.Minute)
	if err != nil {
		return err
	}
	h.relayURL = "http://" + addr
	for _, tls := range []bool{false, true} {
		if err := os.WriteFile(h.policyFile(tls), []byte(policyYAML(h.info, tls)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) close() {
	for _, c := range []*child{h.relay, h.serve} {
		if c != nil {
			_ = c.stop(10 * time.Second)
		}
	}
	os.RemoveAll(h.dir)
}

func (h *harness) policyFile(tls bool) string {
	if tls {
		return filepath.Join(h.dir, "policy-tls.yaml")
	}
	return filepath.Join(h.dir, "policy.yaml")
}

// policyYAML allows the origin servers by IP; with tls, it also gives
// benchHost an http rule, which makes osandbox intercept its TLS.
func policyYAML(info serverInfo, tls bool) string {
	port := func(addr string) string {
		_, p, _ := strings.Cut(addr, ":")
		return p
	}
	s := "version: 1\nallow:\n" +
		"  - name: bench-origins\n" +
		"    hosts: [127.0.0.1]\n" +
		fmt.Sprintf("    ports: [%s, %s, %s]\n", port(info.HTTP), port(info.HTTPS), port(info.Echo))
	if tls {
		s += "  - name: bench-tls-inspected\n" +
			"    hosts: [" + benchHost + "]\n" +
			"    ports: [" + port(info.HTTPS) + "]\n" +
			"    http:\n" +
			"      - methods: [\"*\"]\n" +
			"        paths: [\"/**\"]\n"
	}
	return s + "allow_private: [127.0.0.1/32]\n"
}

// runSpec is one client run.
type runSpec struct {
	tls  bool     // run osandbox with the TLS-inspecting policy
	args []string // client flags after -proxy
	// lowFD, if set, starts osandbox with this soft RLIMIT_NOFILE, to see
	// that it raises its own.
	lowFD int
	// hook, if set, is called on each hold line with the pid of the proxy
	// process (0 when direct); its values join the result.
	hook func(line string, pid int, vals map[string]float64)
}

// runClient runs the client once in mode m and returns its values.
func (h *harness) runClient(m mode, spec runSpec) (map[string]float64, error) {
	args := append([]string{"client"}, spec.args...)
	var c *child
	var err error
	pid := 0
	var auditFile string
	switch m {
	case direct:
		c, err = startChild(h.self, append(args, "-proxy", "")...)
	case bare:
		c, err = startChild(h.self, append(args, "-proxy", h.relayURL)...)
		pid = h.relay.pid()
	case osb:
		osbArgs := []string{"run", "--policy", h.policyFile(spec.tls),
			"--resolve", benchHost + ":127.0.0.1", "--upstream-ca", h.info.CertFile}
		if h.k.Audit {
			h.runs++
			auditFile = filepath.Join(h.dir, fmt.Sprintf("audit-%d.jsonl", h.runs))
			osbArgs = append(osbArgs, "--audit-log", auditFile)
		}
		osbArgs = append(osbArgs, "--", h.self)
		osbArgs = append(osbArgs, args...)
		osbArgs = append(osbArgs, "-proxy", "env")
		if spec.lowFD > 0 {
			c, err = startChild(h.self, append([]string{"lowfd", strconv.Itoa(spec.lowFD), h.osandbox}, osbArgs...)...)
		} else {
			c, err = startChild(h.osandbox, osbArgs...)
		}
		if err == nil {
			pid = c.pid()
		}
	}
	if err != nil {
		return nil, err
	}
	vals := map[string]float64{}
	res, err := converse(c, func(line string) {
		if spec.hook != nil {
			spec.hook(line, pid, vals)
		}
	})
	stopErr := c.stop(30 * time.Second)
	for k, v := range res.Values {
		vals[k] = v
	}
	if auditFile != "" {
		if st, err := os.Stat(auditFile); err == nil {
			vals["audit_bytes"] = float64(st.Size())
		}
		os.Remove(auditFile)
	}
	switch {
	case err != nil:
		return vals, err
	case res.Error != "":
		return vals, errors.New(res.Error)
	case stopErr != nil:
		return vals, fmt.Errorf("%s exited: %v (stderr: %s)", m, stopErr, c.stderr)
	}
	return vals, nil
}

// converse reads the client's lines, calls hold for each hold line before
// answering it, and returns the client's result.
func converse(c *child, hold func(line string)) (clientResult, error) {
	var res clientResult
	deadline := time.Now().Add(clientTimeout)
	for {
		line, err := c.readLine(time.Until(deadline))
		if err != nil {
			return res, err
		}
		switch {
		case line == lineReady || line == lineHeld:
			hold(line)
			if err := c.proceed(); err != nil {
				return res, err
			}
		case strings.HasPrefix(line, lineResult+" "):
			err := json.Unmarshal([]byte(strings.TrimPrefix(line, lineResult+" ")), &res)
			return res, err
		default:
			fmt.Fprintf(os.Stderr, "  client: %s\n", line)
		}
	}
}

// lowFDMain is `osbench lowfd N CMD ARGS...`: exec CMD with the soft
// RLIMIT_NOFILE set to N, keeping the pid (the harness watches it).
func lowFDMain(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: osbench lowfd N CMD [ARGS...]")
	}
	n, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		return err
	}
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	r.Cur = min(n, r.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	path, err := exec.LookPath(args[1])
	if err != nil {
		return err
	}
	return syscall.Exec(path, args[1:], os.Environ())
}

// timeRun is the wall time of one run of argv, which must succeed.
func timeRun(argv ...string) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return d, nil
}
