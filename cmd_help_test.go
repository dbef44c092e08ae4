package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// cliRun runs the CLI in-process with stdin and returns its exit status,
// stdout and stderr.
func cliRun(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runAppIO(append([]string{"osandbox"}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// wantErrorLines fails t unless stderr is non-empty and every line of it
// starts "osandbox:".
func wantErrorLines(t *testing.T, stderr string) {
	t.Helper()
	if strings.TrimSpace(stderr) == "" {
		t.Fatal("no error on stderr")
	}
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		if !strings.HasPrefix(line, "osandbox: ") {
			t.Errorf("stderr line %q does not start with \"osandbox: \"", line)
		}
	}
}

// commandPaths lists every command of the app as argv, groups included.
func commandPaths(prefix []string, cmds []*cli.Command) [][]string {
	var out [][]string
	for _, c := range cmds {
		p := append(append([]string(nil), prefix...), c.Name)
		out = append(out, p)
		out = append(out, commandPaths(p, c.Subcommands)...)
	}
	return out
}

// TestHelpHasExamples: --help of the app and of every command shows
// examples, on stdout, with exit status 0.
func TestHelpHasExamples(t *testing.T) {
	var code int
	paths := append([][]string{{}}, commandPaths(nil, newApp(&code).Commands)...)
	if len(paths) < 12 {
		t.Fatalf("only %d commands: %q", len(paths), paths)
	}
	for _, p := range paths {
		t.Run(strings.Join(append([]string{"osandbox"}, p...), " "), func(t *testing.T) {
			code, out, errOut := cliRun(t, "", append(p, "--help")...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if !strings.Contains(out, "Examples:\n") {
				t.Errorf("help has no examples:\n%s", out)
			}
		})
	}
}

// TestUsageErrors: a command used wrongly fails with one line starting
// "osandbox:" that names where its help is, exit 2 (125 for run).
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bogus"}, 2, `osandbox: unknown command "bogus" (see 'osandbox --help')`},
		{[]string{"help", "bogus"}, 2, `osandbox: unknown command "bogus" (see 'osandbox --help')`},
		{[]string{"--bogus"}, 2, "osandbox: flag provided but not defined: -bogus (see 'osandbox --help')"},
		{[]string{"run", "--bogus"}, 125, "osandbox: run: flag provided but not defined: -bogus (see 'osandbox run --help')"},
		{[]string{"policy", "bogus"}, 2, `osandbox: policy: unknown command "bogus" (see 'osandbox policy --help')`},
		{[]string{"policy", "check"}, 2, "osandbox: policy check: want exactly one FILE (see 'osandbox policy check --help')"},
		{[]string{"policy", "explain", "--method"}, 2, "osandbox: policy explain: flag needs an argument: -method (see 'osandbox policy explain --help')"},
		{[]string{"policy", "explain", "p.yaml"}, 2, "osandbox: policy explain: want FILE and TARGET"},
		{[]string{"audit", "export", "--format", "xml", "-"}, 2, `osandbox: audit export: --format: unknown format "xml"`},
		{[]string{"audit", "export", "--decision", "maybe", "-"}, 2, `osandbox: audit export: --decision: unknown decision "maybe"`},
		{[]string{"audit", "summary"}, 2, "osandbox: audit summary: want exactly one FILE"},
		{[]string{"audit", "bogus"}, 2, `osandbox: audit: unknown command "bogus"`},
		{[]string{"completion", "tcsh"}, 2, `osandbox: completion: unknown shell "tcsh"`},
		{[]string{"version", "x"}, 2, "osandbox: version: takes no arguments"},
		{[]string{"doctor", "x"}, 2, "osandbox: doctor: takes no arguments"},
		{[]string{"audit", "summary", "/nonexistent/audit.jsonl"}, 1, "osandbox: audit summary: open /nonexistent/audit.jsonl: no such file or directory"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := cliRun(t, "", c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing (no help dump on a usage error)", out)
			}
			wantErrorLines(t, errOut)
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, c.want) {
				t.Errorf("stderr %q, want one line starting %q", errOut, c.want)
			}
		})
	}
}

// TestHelpCommand: "help" works as a word too, at the top and in groups.
func TestHelpCommand(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"help", "run"}, {"policy", "help"}, {"policy", "help", "explain"}} {
		code, out, errOut := cliRun(t, "", args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Examples:") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, errOut, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := cliRun(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "osandbox ") || !strings.Contains(out, " revision ") || !strings.Contains(out, " go1.") {
		t.Errorf("exit %d, version %q: want osandbox VERSION revision ... goX", code, out)
	}
	if p := product(); p.Name != "osandbox" || p.Version == "" {
		t.Errorf("product %+v", p)
	}
}
