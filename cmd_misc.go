package main

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/policies"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "work with policy files",
		Subcommands: []*cli.Command{{
			Name:        "check",
			Usage:       "validate a policy file; errors carry line:column; exit 1 if invalid",
			ArgsUsage:   "FILE",
			Description: "Example:\n   osandbox policy check policy.yaml",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("policy check: want exactly one FILE", 1)
				}
				p, err := policies.Load(c.Args().First())
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				fmt.Fprintf(c.App.Writer, "%s: ok: %d allow rules, %d deny rules, %d allow_private ranges\n",
					c.Args().First(), len(p.Allow), len(p.Deny), len(p.AllowPrivate))
				return nil
			},
		}},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:        "version",
		Usage:       "print the module version and VCS revision",
		Description: "Example:\n   osandbox version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, versionString())
			return nil
		},
	}
}

func versionString() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "osandbox (unknown version)"
	}
	v := "osandbox " + info.Main.Version
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += "+dirty"
			}
		}
	}
	return v + " " + info.GoVersion
}
