// Command osandbox runs one command with its network egress forced through
// an embedded, policy-enforcing proxy, and writes a JSON audit log of every
// decision. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/netns"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case netns.InitArg:
			netns.RunInit(os.Args) // never returns
		case doctorProbeArg:
			runDoctorProbe(os.Args) // never returns
		}
	}
	os.Exit(runApp(os.Args))
}

// runApp runs the CLI and turns its outcome into an exit status. Every
// error is printed as lines starting "osandbox:".
func runApp(args []string) int {
	return runAppIO(args, os.Stdin, os.Stdout, os.Stderr)
}

// runAppIO is runApp with the standard streams given, for tests.
func runAppIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	code := 0
	app := newApp(&code)
	app.Reader, app.Writer, app.ErrWriter = stdin, stdout, stderr
	if err := app.Run(args); err != nil {
		printError(stderr, err)
		var coder cli.ExitCoder
		if errors.As(err, &coder) && coder.ExitCode() != 0 {
			return coder.ExitCode()
		}
		return 1
	}
	return code
}

// printError writes err with "osandbox: " before each of its lines (a
// policy with several problems gives one line per problem).
func printError(w io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimRight(line, " \t\r"); line != "" {
			fmt.Fprintf(w, "osandbox: %s\n", line)
		}
	}
}

func newApp(code *int) *cli.App {
	app := &cli.App{
		Name:  "osandbox",
		Usage: "run a command whose network egress goes only through a policy-enforcing proxy",
		Description: "osandbox runs CMD in its own network namespace (rootless: a user namespace too).\n" +
			"The only way out is an embedded HTTP proxy that allows what the policy allows,\n" +
			"denies the rest, and writes every decision to a JSON-lines audit log.\n\n" +
			"Examples:\n" +
			"   osandbox run --allow registry.npmjs.org --audit-log audit.jsonl -- npm install\n" +
			"   osandbox run --policy policy.yaml -- curl https://api.github.com/user\n" +
			"   osandbox run --learn --audit-log learn.jsonl -- make && osandbox policy suggest learn.jsonl\n" +
			"   osandbox policy check policy.yaml\n" +
			"   osandbox audit summary audit.jsonl\n" +
			"   osandbox doctor\n\n" +
			"Flags come before positional arguments. Run 'osandbox COMMAND --help' for a command's own.",
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // runApp prints and exits
		Commands: []*cli.Command{
			runCommand(code),
			policyCommand(),
			auditCommand(),
			doctorCommand(),
			completionCommand(),
			versionCommand(),
		},
	}
	app.OnUsageError = func(c *cli.Context, err error, _ bool) error { return usageError(c, err.Error()) }
	app.Action = groupAction
	setUsageErrors(app.Commands)
	return app
}

// setUsageErrors makes every flag error a one-line usage error, and gives
// each command group an action that refuses an unknown subcommand.
func setUsageErrors(cmds []*cli.Command) {
	for _, cmd := range cmds {
		cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error { return usageError(c, err.Error()) }
		// --help is enough; a "help" subcommand would shadow a FILE named help.
		cmd.HideHelpCommand = true
		if len(cmd.Subcommands) > 0 {
			if cmd.Action == nil {
				cmd.Action = groupAction
			}
			setUsageErrors(cmd.Subcommands)
		}
	}
}

// groupAction runs for the app or a command group given no subcommand:
// help, or a usage error for a name that is not a subcommand.
func groupAction(c *cli.Context) error {
	if c.Args().First() == "help" && c.NArg() <= 2 { // "osandbox help", "osandbox help run"
		if name := c.Args().Get(1); name != "" {
			if err := cli.ShowCommandHelp(c, name); err != nil {
				return usageError(c, fmt.Sprintf("unknown command %q", name))
			}
			return nil
		}
	} else if c.NArg() > 0 {
		return usageError(c, fmt.Sprintf("unknown command %q", c.Args().First()))
	}
	if c.Command != nil && c.Command.Name != "" && c.Command.HelpName != c.App.Name {
		return cli.ShowSubcommandHelp(c)
	}
	return cli.ShowAppHelp(c)
}

// usageError is the one-line error for a command used wrongly: it names
// the command and where to read its help. It exits 2, or 125 for run
// (osandbox itself failed, as docker run does).
func usageError(c *cli.Context, msg string) error {
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	code := 2
	if name == c.App.Name+" run" {
		code = 125
	}
	if sub := strings.TrimPrefix(strings.TrimPrefix(name, c.App.Name), " "); sub != "" {
		msg = sub + ": " + msg
	}
	return cli.Exit(fmt.Sprintf("%s (see '%s --help')", msg, name), code)
}
