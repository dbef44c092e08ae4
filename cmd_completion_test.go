package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestCompletionScripts(t *testing.T) {
	cases := []struct {
		shell string
		want  []string
		check []string // a shell that can check the syntax: argv before the file
	}{
		{"bash", []string{"complete -o bashdefault -o default -F _osandbox_complete osandbox", "--generate-bash-completion"}, []string{"bash", "-n"}},
		{"zsh", []string{"#compdef osandbox", "compdef _osandbox osandbox", "--generate-bash-completion"}, []string{"zsh", "-n"}},
		{"fish", []string{"complete -c osandbox", "policy", "export", "doctor"}, []string{"fish", "--no-execute"}},
	}
	for _, c := range cases {
		t.Run(c.shell, func(t *testing.T) {
			code, out, errOut := cliRun(t, "", "completion", c.shell)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("script lacks %q:\n%s", w, out)
				}
			}
			if _, err := exec.LookPath(c.check[0]); err != nil {
				t.Logf("%s is not installed: syntax not checked", c.check[0])
				return
			}
			path := writeTemp(t, "completion."+c.shell, out)
			if b, err := exec.Command(c.check[0], append(c.check[1:], path)...).CombinedOutput(); err != nil {
				t.Errorf("%s rejects the script: %v\n%s", c.check[0], err, b)
			}
		})
	}
}
