package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "check, explain, suggest and describe policy files",
		Description: "Examples:\n" +
			"   osandbox policy check policy.yaml\n" +
			"   osandbox policy explain policy.yaml https://api.github.com/user\n" +
			"   osandbox policy suggest audit.jsonl > policy.yaml\n" +
			"   osandbox policy schema > osandbox-policy.schema.json",
		Subcommands: []*cli.Command{policyCheckCommand(), policyExplainCommand(), policySuggestCommand(), policySchemaCommand()},
	}
}

func policyCheckCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "validate a policy file; errors carry line:column; exit 1 if invalid",
		ArgsUsage: "FILE",
		Description: "Examples:\n" +
			"   osandbox policy check policy.yaml\n" +
			"   osandbox policy check policy.yaml && osandbox run --policy policy.yaml -- make\n\n" +
			"On success it prints one line: how many allow and deny rules and allow_private ranges.\n" +
			"On failure each problem is one line, FILE:LINE:COLUMN: message, and the exit status is 1.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError(c, "want exactly one FILE")
			}
			p, err := policies.Load(c.Args().First())
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s: ok: %d allow rules, %d deny rules, %d allow_private ranges\n",
				c.Args().First(), len(p.Allow), len(p.Deny), len(p.AllowPrivate))
			return nil
		},
	}
}

func policyExplainCommand() *cli.Command {
	return &cli.Command{
		Name:      "explain",
		Usage:     "say which rule decides TARGET (a URL or HOST:PORT), and why",
		ArgsUsage: "FILE TARGET",
		Description: "Examples:\n" +
			"   osandbox policy explain policy.yaml https://api.github.com/repos/x/y\n" +
			"   osandbox policy explain --method POST policy.yaml https://api.github.com/gists\n" +
			"   osandbox policy explain policy.yaml registry.npmjs.org:443\n" +
			"   osandbox policy explain policy.yaml wss://chat.example.com/socket/room\n\n" +
			"A URL is decided as a request (GET unless --method; ws:// and wss:// ask to upgrade to\n" +
			"websocket); HOST:PORT as a connection (a CONNECT), or as a request for / with --method.\n" +
			"It lists every rule that names the host, deny rules first, says which one decides, and\n" +
			"adds a note on the SSRF guard: whether the proxy may dial the address. Exit status 0\n" +
			"whatever the decision.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "method", Usage: "HTTP `METHOD` of the request (default GET for a URL)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usageError(c, "want FILE and TARGET (flags go before them)")
			}
			p, err := policies.Load(c.Args().Get(0))
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			r, err := policies.ParseTarget(c.Args().Get(1), c.String("method"))
			if err != nil {
				return usageError(c, err.Error())
			}
			writeExplanation(c.App.Writer, p.Explain(r))
			return nil
		},
	}
}

func writeExplanation(w io.Writer, x policies.Explanation) {
	r := x.Request
	hostPort := r.Host + ":" + fmt.Sprint(r.Port)
	if strings.Contains(r.Host, ":") {
		hostPort = "[" + r.Host + "]:" + fmt.Sprint(r.Port)
	}
	if r.Method == "" {
		fmt.Fprintf(w, "target:     CONNECT %s\n", hostPort)
	} else {
		up := ""
		if r.Upgrade != "" {
			up = " (Upgrade: " + r.Upgrade + ")"
		}
		fmt.Fprintf(w, "target:     %s %s on %s%s\n", r.Method, r.Path, hostPort, up)
	}
	fmt.Fprintf(w, "decision:   %s\n", describeDecision(x.Decision))
	if r.Method != "" {
		conn := "refused before any request: " + describeDecision(x.Conn)
		switch {
		case x.Conn.Action == policies.Allow && x.Conn.Inspect:
			conn = "let through and inspected at L7 (TLS intercepted on a TLS port); each request is decided"
		case x.Conn.Action == policies.Allow:
			conn = "let through as a blind tunnel (no rule for this host:port has http rules)"
		}
		fmt.Fprintf(w, "connection: a CONNECT to %s is %s\n", hostPort, conn)
	}
	if len(x.Steps) == 0 {
		fmt.Fprintf(w, "rules:      none names %s\n", r.Host)
	} else {
		fmt.Fprintf(w, "rules that name %s:\n", r.Host)
	}
	for _, s := range x.Steps {
		verdict := "no match"
		switch {
		case s.Deciding:
			verdict = "DECIDES"
		case s.Match:
			verdict = "matches"
		}
		fmt.Fprintf(w, "  %s[%d] %q: %s: %s\n", s.List, s.Index, s.Rule, verdict, s.Why)
	}
	if x.SSRF != "" {
		fmt.Fprintf(w, "ssrf:       %s\n", x.SSRF)
	}
}

func describeDecision(d policies.Decision) string {
	s := fmt.Sprintf("%s (%s)", d.Action, d.Reason)
	switch {
	case d.Rule != "" && d.Reason == policies.ReasonRuleDeny:
		s += fmt.Sprintf(" by deny rule %q", d.Rule)
	case d.Rule != "" && d.Reason == policies.ReasonUpgradeNotAllowed:
		s += fmt.Sprintf(": allow rule %q matches but permits no such upgrade", d.Rule)
	case d.Rule != "":
		s += fmt.Sprintf(" by allow rule %q", d.Rule)
	case d.Reason == policies.ReasonNoMatchingRule:
		s += ": no allow rule matches, so the default (deny) applies"
	}
	return s
}

func policySuggestCommand() *cli.Command {
	return &cli.Command{
		Name:      "suggest",
		Usage:     "write the smallest policy that allows what an audit log shows",
		ArgsUsage: "AUDIT",
		Description: "Examples:\n" +
			"   osandbox run --learn --audit-log learn.jsonl -- npm install\n" +
			"   osandbox policy suggest learn.jsonl > policy.yaml\n" +
			"   osandbox run --policy policy.yaml -- npm install\n\n" +
			"It reads the decisions of AUDIT (a file, or - for stdin) and prints a version 1 policy\n" +
			"that allows exactly what was allowed there: hosts stay exact, a host:port seen only at\n" +
			"L7 (plain HTTP through the proxy, or an inspected tunnel) gets http rules listing the\n" +
			"methods, paths and upgrades seen, and a blind tunnel gets a connection-level rule. Hosts\n" +
			"and ports with the same rules are grouped. When the proxy dialed a private or loopback\n" +
			"address for a host name, that address goes into allow_private, or the SSRF guard would\n" +
			"refuse it. DNS queries add nothing: the connections that follow them do. Review the\n" +
			"result before use; warnings go to stderr.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "include-denied", Usage: "also allow what was denied for want of a rule (no_matching_rule, upgrade_not_allowed)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError(c, "want exactly one AUDIT log (or - for stdin)")
			}
			name := c.Args().First()
			in, err := openInput(c, name)
			if err != nil {
				return cli.Exit("policy suggest: "+err.Error(), 1)
			}
			defer in.Close()
			events, err := audit.ReadAll(in)
			if err != nil {
				return cli.Exit(fmt.Sprintf("policy suggest: %s: %v", name, err), 1)
			}
			seen := seenInLog(events, c.Bool("include-denied"))
			p, warnings := policies.Suggest(seen)
			for _, w := range warnings {
				fmt.Fprintf(c.App.ErrWriter, "osandbox: policy suggest: warning: %s\n", w)
			}
			out := p.YAML()
			if _, err := policies.Parse(out, "suggested policy"); err != nil {
				return cli.Exit("policy suggest: the suggested policy does not parse (a bug): "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "# Suggested by `osandbox policy suggest` from %d allowed connections and requests in %q.\n", len(seen), name)
			fmt.Fprintf(c.App.Writer, "# It allows exactly what the log shows; review it before use.\n")
			_, err = c.App.Writer.Write(out)
			return err
		},
	}
}

// seenInLog picks from an audit log what Suggest should allow: allowed
// requests and upgrades, and allowed connections whose contents were not
// seen (a blind tunnel). A connection whose requests the log has, or one to
// a host:port whose connections were inspected in the same run, is
// covered by those requests.
func seenInLog(events []audit.Event, includeDenied bool) []policies.Seen {
	type connKey struct {
		sandbox string
		conn    uint64
	}
	type hostKey struct {
		sandbox, host string
		port          int
	}
	hasRequests := map[connKey]bool{}
	for _, e := range events {
		if (e.Event == audit.EventRequest || e.Event == audit.EventUpgrade) && e.Conn != 0 {
			hasRequests[connKey{e.Sandbox, e.Conn}] = true
		}
	}
	inspected := map[hostKey]bool{}
	for _, e := range events {
		if e.Event == audit.EventConnect && hasRequests[connKey{e.Sandbox, e.Conn}] {
			inspected[hostKey{e.Sandbox, e.Host, e.Port}] = true
		}
	}
	wanted := func(e audit.Event) bool {
		switch {
		case e.Decision == audit.DecisionAllow || e.Decision == audit.DecisionAllowUpgrade:
			return true
		case includeDenied && e.Decision == audit.DecisionDeny:
			return e.Reason == string(policies.ReasonNoMatchingRule) || e.Reason == string(policies.ReasonUpgradeNotAllowed)
		}
		return false
	}
	var seen []policies.Seen
	for _, e := range events {
		if !wanted(e) {
			continue
		}
		s := policies.Seen{Host: e.Host, Port: e.Port}
		if ap, err := netip.ParseAddrPort(e.Dst); err == nil {
			s.Dst = ap.Addr()
		}
		switch e.Event {
		case audit.EventRequest, audit.EventUpgrade:
			s.Method, s.Path, s.Upgrade = e.Method, e.Path, e.Upgrade
		case audit.EventConnect:
			if hasRequests[connKey{e.Sandbox, e.Conn}] || inspected[hostKey{e.Sandbox, e.Host, e.Port}] {
				continue
			}
		default:
			continue
		}
		seen = append(seen, s)
	}
	return seen
}

func policySchemaCommand() *cli.Command {
	return &cli.Command{
		Name:  "schema",
		Usage: "print the policy file's JSON Schema",
		Description: "Examples:\n" +
			"   osandbox policy schema > osandbox-policy.schema.json\n" +
			"   # in VS Code with the YAML extension, first line of policy.yaml:\n" +
			"   # yaml-language-server: $schema=./osandbox-policy.schema.json\n\n" +
			"The schema (JSON Schema draft 2020-12) describes the shape of a version 1 policy;\n" +
			"`osandbox policy check` is the authority and also catches what a schema cannot\n" +
			"(duplicate rule names, a CIDR with host bits set, a port written in octal).",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError(c, "takes no arguments")
			}
			_, err := c.App.Writer.Write(policies.JSONSchema())
			return err
		},
	}
}
