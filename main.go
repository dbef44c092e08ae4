// Command osandbox runs one command with its network egress forced through
// an embedded, policy-enforcing proxy, and writes a JSON audit log of every
// decision. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/netns"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == netns.InitArg {
		netns.RunInit(os.Args) // never returns
	}
	os.Exit(runApp(os.Args))
}

// runApp runs the CLI and turns its outcome into an exit status. Every
// error is printed as one line starting "osandbox:".
func runApp(args []string) int {
	code := 0
	app := newApp(&code)
	if err := app.Run(args); err != nil {
		fmt.Fprintf(os.Stderr, "osandbox: %v\n", err)
		var coder cli.ExitCoder
		if errors.As(err, &coder) && coder.ExitCode() != 0 {
			return coder.ExitCode()
		}
		return 1
	}
	return code
}

func newApp(code *int) *cli.App {
	return &cli.App{
		Name:  "osandbox",
		Usage: "run a command whose network egress goes only through a policy-enforcing proxy",
		Description: "osandbox runs CMD in its own network namespace (rootless: a user namespace too).\n" +
			"The only way out is an embedded HTTP proxy that allows what the policy allows,\n" +
			"denies the rest, and writes every decision to a JSON-lines audit log.",
		UsageText: "osandbox run --allow registry.npmjs.org --audit-log audit.jsonl -- npm install\n" +
			"osandbox run --policy policy.yaml -- curl https://api.github.com/user\n" +
			"osandbox policy check policy.yaml",
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // runApp prints and exits
		Commands: []*cli.Command{
			runCommand(code),
			policyCommand(),
			versionCommand(),
		},
	}
}
