package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/netns"
	"github.com/osandbox/osandbox/policies"
	"github.com/osandbox/osandbox/sandbox"
)

func runCommand(code *int) *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run CMD with its egress forced through the policy proxy",
		ArgsUsage: "-- CMD [ARGS...]",
		Description: "Examples:\n" +
			"   osandbox run --allow example.com -- curl https://example.com\n" +
			"   osandbox run --policy policy.yaml --audit-log audit.jsonl -- npm install\n" +
			"   osandbox run --allow 127.0.0.1:8080 -- curl http://127.0.0.1:8080/\n\n" +
			"With neither --policy nor --allow, all egress is denied.\n" +
			"Exit status: CMD's own; 128+N if it died of signal N; 125 if osandbox failed;\n" +
			"126 if CMD is not executable; 127 if CMD was not found.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "policy", Usage: "policy file (YAML, version 1)", TakesFile: true},
			&cli.StringSliceFlag{Name: "allow", Usage: "quick allow rule `HOST[:PORT]` (repeatable); HOST may be a glob, IP or CIDR; PORT defaults to 80 and 443"},
			&cli.StringFlag{Name: "audit-log", Usage: "append audit events as JSON lines to `FILE`", TakesFile: true},
			&cli.StringSliceFlag{Name: "resolve", Usage: "pin `HOST:ADDR` for the proxy's own lookups (repeatable)"},
			&cli.StringSliceFlag{Name: "upstream-ca", Usage: "extra CA certificates (PEM `FILE`) the proxy trusts for upstream TLS", TakesFile: true},
			&cli.BoolFlag{Name: "learn", Usage: "allow what the SSRF guard allows; audit each decision as learn_mode"},
			&cli.BoolFlag{Name: "quiet", Usage: "do not print denials to stderr"},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "osandbox's own diagnostics on stderr: debug, info, warn, error"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := runConfig(c)
			if err != nil {
				return cli.Exit(err.Error(), netns.ExitSetupFailed)
			}
			n, err := sandbox.Run(cfg)
			if err != nil {
				var ee *sandbox.ExitError
				if errors.As(err, &ee) {
					return cli.Exit(err.Error(), ee.Code)
				}
				return cli.Exit(err.Error(), netns.ExitSetupFailed)
			}
			*code = n
			return nil
		},
	}
}

// runConfig turns the flags into a sandbox.Config, validating all of them
// before anything starts.
func runConfig(c *cli.Context) (sandbox.Config, error) {
	var cfg sandbox.Config
	cfg.Command = c.Args().Slice()
	if len(cfg.Command) == 0 {
		return cfg, errors.New("run: no command given (usage: osandbox run [flags] -- CMD [ARGS...])")
	}
	level, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(level)
	cfg.Log = logrus.NewEntry(logger).WithField("component", "osandbox")

	pol := policies.Default()
	if f := c.String("policy"); f != "" {
		if pol, err = policies.Load(f); err != nil {
			return cfg, err
		}
	}
	var quick []policies.Rule
	for _, spec := range c.StringSlice("allow") {
		r, err := policies.QuickRule(spec)
		if err != nil {
			return cfg, fmt.Errorf("--allow %s: %w", spec, err)
		}
		quick = append(quick, r)
	}
	cfg.Policy = pol.WithAllow(quick...)
	if cfg.Pins, err = parsePins(c.StringSlice("resolve")); err != nil {
		return cfg, err
	}
	if cas := c.StringSlice("upstream-ca"); len(cas) > 0 {
		if cfg.UpstreamCAs, err = loadCAs(cas); err != nil {
			return cfg, err
		}
	}
	cfg.AuditPath = c.String("audit-log")
	cfg.Learn = c.Bool("learn")
	cfg.Quiet = c.Bool("quiet")
	return cfg, nil
}

// parsePins parses --resolve HOST:ADDR values; ADDR may be IPv6, bracketed or not.
func parsePins(specs []string) (map[string][]netip.Addr, error) {
	pins := map[string][]netip.Addr{}
	for _, s := range specs {
		host, addr, ok := strings.Cut(s, ":")
		addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		ip, err := netip.ParseAddr(addr)
		if !ok || host == "" || err != nil {
			return nil, fmt.Errorf("--resolve %q: want HOST:ADDR with ADDR an IP address", s)
		}
		name := strings.TrimSuffix(strings.ToLower(host), ".")
		pins[name] = append(pins[name], ip)
	}
	return pins, nil
}

func loadCAs(files []string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--upstream-ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--upstream-ca %s: no PEM certificates found", f)
		}
	}
	return pool, nil
}
