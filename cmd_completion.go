package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask osandbox itself for candidates: urfave/cli
// answers a command line that ends in --generate-bash-completion with the
// subcommands (or, after a "-", the flags) that may come next. Nothing
// after "--" is completed by osandbox: that is the sandboxed command's.

const bashCompletion = `# bash completion for osandbox
# Load it now:    source <(osandbox completion bash)
# or for good:    osandbox completion bash > /etc/bash_completion.d/osandbox
_osandbox_complete() {
  local cur words cword
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local w
  for w in "${words[@]:1:$((cword - 1))}"; do
    [[ "$w" == "--" ]] && return 0 # the sandboxed command's own arguments
  done
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]:0:$cword}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]:0:$cword}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _osandbox_complete osandbox
`

const zshCompletion = `#compdef osandbox
# zsh completion for osandbox
# Load it now:    source <(osandbox completion zsh)      (after compinit)
# or for good:    osandbox completion zsh > "${fpath[1]}/_osandbox"
_osandbox() {
  local -a opts
  local cur
  cur=${words[-1]}
  if (( ${words[(I)--]} > 0 && ${words[(I)--]} < CURRENT )); then
    _normal
    return
  fi
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_osandbox" ]]; then
  _osandbox "$@"
else
  compdef _osandbox osandbox
fi
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "Examples:\n" +
			"   source <(osandbox completion bash)\n" +
			"   osandbox completion zsh > \"${fpath[1]}/_osandbox\"\n" +
			"   osandbox completion fish > ~/.config/fish/completions/osandbox.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError(c, "want one shell: bash, zsh or fish")
			}
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return cli.Exit(fmt.Sprintf("completion fish: %v", err), 1)
				}
				script = s
			default:
				return usageError(c, fmt.Sprintf("unknown shell %q (want bash, zsh or fish)", shell))
			}
			_, err := fmt.Fprint(c.App.Writer, script)
			return err
		},
	}
}
