package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/audit"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "export and summarise audit logs",
		Description: "Examples:\n" +
			"   osandbox audit summary audit.jsonl\n" +
			"   osandbox audit export --format ocsf audit.jsonl > audit.ocsf.jsonl\n" +
			"   osandbox audit export --format csv --decision deny audit.jsonl > denied.csv",
		Subcommands: []*cli.Command{auditExportCommand(), auditSummaryCommand()},
	}
}

func auditExportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "convert an audit log to JSON Lines, a JSON array, OCSF or CSV",
		ArgsUsage: "FILE|-",
		Description: "Examples:\n" +
			"   osandbox audit export --format json audit.jsonl | jq '.[] | select(.decision == \"deny\")'\n" +
			"   osandbox audit export --format ocsf audit.jsonl > audit.ocsf.jsonl\n" +
			"   osandbox audit export --format csv --decision deny audit.jsonl > denied.csv\n" +
			"   cat audit.jsonl | osandbox audit export --decision allow_upgrade -\n\n" +
			"Formats:\n" +
			"   jsonl  one canonical audit line per event (the default)\n" +
			"   json   one JSON array of those objects\n" +
			"   ocsf   one OCSF 1.3 object per line: connect, close and dns as Network Activity (4001),\n" +
			"          request and upgrade as HTTP Activity (4002); start and exit are left out\n" +
			"   csv    a header row of the audit field names, then one row per event; a cell is empty\n" +
			"          when the log omits the field; a cell that starts like a spreadsheet formula\n" +
			"          (= + - @) gets a leading apostrophe\n\n" +
			"--decision keeps only the events with that decision, so it drops start, close and exit.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: string(audit.FormatJSONL), Usage: "output `FORMAT`: jsonl, json, ocsf or csv"},
			&cli.StringFlag{Name: "decision", Usage: "keep only events whose decision is `D`: allow, deny or allow_upgrade"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError(c, "want exactly one FILE (or - for stdin)")
			}
			format, err := audit.ParseFormat(c.String("format"))
			if err != nil {
				return usageError(c, "--format: "+err.Error())
			}
			opts := audit.ExportOptions{Format: format, Decision: c.String("decision"), Product: product()}
			x, err := audit.NewExporter(c.App.Writer, opts)
			if err != nil {
				return usageError(c, "--decision: "+err.Error())
			}
			name := c.Args().First()
			in, err := openInput(c, name)
			if err != nil {
				x.Close()
				return cli.Exit("audit export: "+err.Error(), 1)
			}
			defer in.Close()
			serr := audit.Scan(in, x.Write)
			if cerr := x.Close(); serr == nil {
				serr = cerr
			}
			if serr != nil {
				return cli.Exit(fmt.Sprintf("audit export: %s: %v", name, serr), 1)
			}
			return nil
		},
	}
}

func auditSummaryCommand() *cli.Command {
	return &cli.Command{
		Name:      "summary",
		Usage:     "per host:port: allowed, denied, upgrades, bytes, first and last seen",
		ArgsUsage: "FILE|-",
		Description: "Examples:\n" +
			"   osandbox audit summary audit.jsonl\n" +
			"   osandbox audit summary --json audit.jsonl | jq '.[] | select(.denied > 0) | .host'\n\n" +
			"Rows are sorted by host, then port. Allowed and denied count connection and request\n" +
			"decisions; an upgrade let through counts as an upgrade. Bytes add up the close events of\n" +
			"each host:port's connections (up: from the sandbox). With --json it prints an array of\n" +
			"objects with host, port, allowed, denied, upgrades, bytes_up, bytes_down, first_seen and\n" +
			"last_seen; sizes are then in bytes.",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print a JSON array instead of a table"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError(c, "want exactly one FILE (or - for stdin)")
			}
			name := c.Args().First()
			in, err := openInput(c, name)
			if err != nil {
				return cli.Exit("audit summary: "+err.Error(), 1)
			}
			defer in.Close()
			var s audit.Summary
			if err := audit.Scan(in, func(e audit.Event) error { s.Add(e); return nil }); err != nil {
				return cli.Exit(fmt.Sprintf("audit summary: %s: %v", name, err), 1)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(s.Targets())
			}
			return s.WriteTable(c.App.Writer)
		},
	}
}

// openInput opens FILE, or the app's stdin for "-".
func openInput(c *cli.Context, name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(c.App.Reader), nil
	}
	return os.Open(name)
}
