// Package sandbox runs one command under osandbox: it opens the audit log,
// starts the command in its namespace, serves the proxy on the listeners the
// namespace hands over, forwards signals, and cleans up. It is the only
// package that knows all the others; it holds no policy or protocol logic.
package sandbox

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/netns"
	"github.com/osandbox/osandbox/policies"
	"github.com/osandbox/osandbox/proxy"
)

// Where things listen inside the command's namespace.
const (
	// ProxyAddr is where the command finds the proxy.
	ProxyAddr = "127.0.0.1:3128"
	// capturePort takes the TCP connections nftables redirects, and
	// dnsPort the redirected DNS queries.
	capturePort = 3129
	dnsPort     = 3153
)

// endpoints are the sockets init opens, in the order run serves them.
var endpoints = []netns.Endpoint{
	{Network: "tcp", Addr: ProxyAddr},
	{Network: "tcp", Addr: fmt.Sprintf("127.0.0.1:%d", capturePort)},
	{Network: "udp", Addr: fmt.Sprintf("127.0.0.1:%d", dnsPort)},
}

// Config is one run, built once by main.
type Config struct {
	// Command is argv; Command[0] is looked up in PATH.
	Command []string
	// Policy decides; nil means policies.Default().
	Policy *policies.Policy
	// AuditPath is the audit log; "" writes none (denials still reach stderr).
	AuditPath string
	// Quiet stops the one-line denial messages on stderr.
	Quiet bool
	// Pins are --resolve entries for the proxy's own lookups.
	Pins map[string][]netip.Addr
	// UpstreamCAs are trusted for upstream TLS on top of the system roots; nil: system roots.
	UpstreamCAs *x509.CertPool
	// Learn allows what the SSRF guard allows, audited as learn_mode.
	Learn bool
	// Log is for diagnostics; nil discards them.
	Log *logrus.Entry
	// Stdin, Stdout and Stderr of the command; nil means os.Stdin and so on.
	Stdin, Stdout, Stderr *os.File
	// Limits of the proxy; zero fields take proxy.DefaultLimits.
	Limits proxy.Limits
}

// ExitError is a failure that decides osandbox's exit status: 125 when
// osandbox itself failed, 126 or 127 when the command could not be run.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func setupError(format string, args ...any) error {
	return &ExitError{Code: netns.ExitSetupFailed, Err: fmt.Errorf(format, args...)}
}

// Run runs the command to completion and returns its exit status (128+N
// for death by signal N). The audit log is complete when Run returns.
func Run(cfg Config) (int, error) {
	cfg.defaults()
	path, err := lookPath(cfg.Command)
	if err != nil {
		return 0, err
	}
	id := audit.NewID()
	opts := audit.Options{Sandbox: id}
	if !cfg.Quiet {
		opts.Denials = cfg.Stderr
	}
	log, err := audit.Open(cfg.AuditPath, opts)
	if err != nil {
		return 0, setupError("audit log: %w", err)
	}
	defer log.Close()
	log.Emit(audit.Event{Event: audit.EventStart, Command: cfg.Command, PolicySHA256: cfg.Policy.SHA256()})

	code, err := run(cfg, path, log, id)
	if err != nil {
		code = netns.ExitSetupFailed
	}
	log.Emit(audit.Event{Event: audit.EventExit, ExitCode: code})
	if cerr := log.Close(); cerr != nil && err == nil {
		err = setupError("audit log: %w", cerr)
	}
	return code, err
}

func run(cfg Config, path string, log *audit.Log, id string) (int, error) {
	pcfg := proxy.Config{
		Policy: cfg.Policy, Audit: log, Log: cfg.Log, Pins: cfg.Pins,
		UpstreamCAs: cfg.UpstreamCAs, Learn: cfg.Learn, Limits: cfg.Limits,
	}
	env := proxyEnv("http://" + ProxyAddr)
	if needsCA(cfg.Policy) && !cfg.Learn {
		tr, err := newTrust(id)
		if err != nil {
			return 0, setupError("%w", err)
		}
		defer tr.remove()
		pcfg.CA = tr.ca
		env = append(env, tr.env()...)
	}
	px, err := proxy.New(pcfg)
	if err != nil {
		return 0, setupError("%w", err)
	}
	// Catch signals before the command exists, so none is lost in between.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	sb, err := netns.Start(netns.Config{
		Path: path, Args: cfg.Command, Env: commandEnv(os.Environ(), env),
		Stdin: cfg.Stdin, Stdout: cfg.Stdout, Stderr: cfg.Stderr,
		Listen:  endpoints,
		Capture: &netns.Capture{TCPPort: capturePort, DNSPort: dnsPort},
	})
	if err != nil {
		return 0, setupError("start sandbox: %w", err)
	}
	for _, w := range sb.Warnings {
		cfg.Log.Warn(w)
	}
	var served sync.WaitGroup
	serve := func(role string, f func() error) {
		served.Add(1)
		go func() {
			defer served.Done()
			if err := f(); err != nil {
				cfg.Log.WithError(err).Errorf("%s stopped", role)
			}
		}()
	}
	serve("proxy", func() error { return px.Serve(sb.Listeners[0]) })
	serve("capture", func() error { return px.ServeCapture(sb.Listeners[1]) })
	serve("dns", func() error { return px.ServeDNS(sb.PacketConns[0]) })
	done := make(chan struct{})
	go forwardSignals(sigs, sb, done)
	code, err := sb.Wait()
	close(done)
	start := time.Now()
	px.Close()
	served.Wait()
	cfg.Log.Debugf("proxy closed in %s", time.Since(start))
	return code, err
}

func forwardSignals(sigs <-chan os.Signal, sb *netns.Sandbox, done <-chan struct{}) {
	for {
		select {
		case s := <-sigs:
			_ = sb.Signal(s)
		case <-done:
			return
		}
	}
}

func (cfg *Config) defaults() {
	if cfg.Policy == nil {
		cfg.Policy = policies.Default()
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Log = logrus.NewEntry(l)
	}
	if cfg.Stdin == nil {
		cfg.Stdin = os.Stdin
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
}

// lookPath finds the command as a shell would, with the shell's statuses.
func lookPath(argv []string) (string, error) {
	if len(argv) == 0 {
		return "", &ExitError{Code: netns.ExitSetupFailed, Err: errors.New("no command given")}
	}
	path, err := exec.LookPath(argv[0])
	if err == nil {
		return path, nil
	}
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return "", &ExitError{Code: netns.ExitNotFound, Err: fmt.Errorf("%s: command not found", argv[0])}
	}
	return "", &ExitError{Code: netns.ExitNotExecutable, Err: fmt.Errorf("%s: %w", argv[0], err)}
}

// proxyVars are the variables clients read to find a proxy.
var proxyVars = []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}

// proxyEnv points every proxy variable, upper- and lower-case, at the proxy.
func proxyEnv(proxyURL string) []string {
	var env []string
	for _, v := range proxyVars {
		env = append(env, v+"="+proxyURL, strings.ToLower(v)+"="+proxyURL)
	}
	const local = "localhost,127.0.0.1,::1"
	return append(env, "NO_PROXY="+local, "no_proxy="+local)
}

// commandEnv is env with the variables of set replacing any of the same
// name, in either case.
func commandEnv(env, set []string) []string {
	names := map[string]bool{}
	for _, kv := range set {
		name, _, _ := strings.Cut(kv, "=")
		names[strings.ToUpper(name)] = true
	}
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !names[strings.ToUpper(name)] {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}
