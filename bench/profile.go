package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
	"github.com/osandbox/osandbox/proxy"
)

// profileMain runs osandbox's proxy in this process (proxy.New and Serve,
// configured as `osandbox run` configures it) with the origins and the
// client in processes of their own, so a CPU or heap profile of this
// process holds the proxy alone. The namespace is left out: it costs
// nothing per byte or request.
func profileMain(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ExitOnError)
	name := fs.String("scenario", "small-forward", "a scenario of `osbench run` (not startup)")
	cpuFile := fs.String("cpuprofile", "", "write the proxy's CPU profile here")
	memFile := fs.String("memprofile", "", "write a heap profile here: for memory while the connections are held, else at the end")
	withAudit := fs.Bool("audit", true, "write an audit log, as `osandbox run --audit-log` does")
	_ = fs.Parse(args)
	if *name == "startup" {
		return errors.New("startup has no proxy traffic to profile")
	}
	if _, _, err := raiseNoFile(); err != nil {
		return err
	}
	k, err := knobsFromEnv()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "osbench-profile-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	serve, err := startChild(self, "serve", "-dir", dir)
	if err != nil {
		return err
	}
	defer serve.stop(10 * time.Second)
	line, err := serve.readLine(time.Minute)
	if err != nil {
		return err
	}
	var info serverInfo
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		return err
	}

	tls := *name == "small-tls"
	px, caFile, closeProxy, err := startProxy(info, dir, tls, *withAudit)
	if err != nil {
		return err
	}
	defer closeProxy()
	cargs := append([]string{"client"}, clientArgs(*name, info, k)...)
	cargs = append(cargs, "-proxy", "http://"+px)
	if caFile != "" {
		cargs = append(cargs, "-ca", info.CertFile+","+caFile)
	}

	if *cpuFile != "" {
		f, err := os.Create(*cpuFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	c, err := startChild(self, cargs...)
	if err != nil {
		return err
	}
	wroteHeap := false
	var base, held int64
	res, err := converse(c, func(line string) {
		time.Sleep(settle)
		rss, _ := procKiB(os.Getpid(), "VmRSS")
		switch line {
		case lineReady:
			base = rss
		case lineHeld:
			held = rss
			if *memFile != "" {
				wroteHeap = true
				if err := writeHeap(*memFile); err != nil {
					fmt.Fprintln(os.Stderr, "heap profile:", err)
				}
			}
		}
	})
	_ = c.stop(30 * time.Second)
	pprof.StopCPUProfile()
	if *memFile != "" && !wroteHeap {
		if err := writeHeap(*memFile); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if held > 0 {
		res.Values["proxy_rss_base_kib"], res.Values["proxy_rss_held_kib"] = float64(base), float64(held)
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

// startProxy serves a proxy.Proxy on 127.0.0.1 with the benchmark's
// policy, --resolve pin and --upstream-ca; with tls, also a CA whose
// certificate it writes for the client.
func startProxy(info serverInfo, dir string, tls, withAudit bool) (addr, caFile string, stop func(), err error) {
	pol, err := policies.Parse([]byte(policyYAML(info, tls)), "bench-policy.yaml")
	if err != nil {
		return "", "", nil, err
	}
	log := audit.New(nil, audit.Options{Sandbox: "bench"})
	if withAudit {
		if log, err = audit.Open(filepath.Join(dir, "audit.jsonl"), audit.Options{Sandbox: "bench"}); err != nil {
			return "", "", nil, err
		}
	}
	pem, err := os.ReadFile(info.CertFile)
	if err != nil {
		return "", "", nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := proxy.Config{Policy: pol, Audit: log, UpstreamCAs: pool,
		Pins: map[string][]netip.Addr{benchHost: {netip.MustParseAddr("127.0.0.1")}}}
	if tls {
		if cfg.CA, err = proxy.NewCA("bench", 24*time.Hour); err != nil {
			return "", "", nil, err
		}
		caFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(caFile, cfg.CA.CertPEM(), 0o644); err != nil {
			return "", "", nil, err
		}
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Serve(ln)
	}()
	return ln.Addr().String(), caFile, func() {
		p.Close()
		<-done
		log.Close()
	}, nil
}

func writeHeap(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}
