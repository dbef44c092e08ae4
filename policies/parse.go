package policies

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a policy file, located at the YAML node that
// caused it.
type Error struct {
	Source       string
	Line, Column int
	Msg          string
}

// Error returns "SOURCE:LINE:COL: message".
func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.Source, e.Line, e.Column, e.Msg)
}

const (
	maxErrors = 20     // problems reported before giving up
	maxNodes  = 100000 // YAML nodes visited, aliases expanded: bounds alias bombs
)

// Parse parses a version 1 policy; source names the file in error messages.
// Parsing is strict: an unknown or duplicate field, a missing version, a
// value of the wrong type, a bad glob or a port out of range is an error.
// The error is an *Error, or for several problems an errors.Join of them (one
// per line); errors.As finds the first.
func Parse(data []byte, source string) (*Policy, error) {
	if len(data) > maxPolicySize {
		return nil, &Error{source, 1, 1, fmt.Sprintf("policy is larger than %d bytes", maxPolicySize)}
	}
	root, err := decodeOne(data, source)
	if err != nil {
		return nil, err
	}
	ps := &parser{source: source, names: map[string]*yaml.Node{}}
	p := ps.policy(root)
	// Report problems in file order, whatever order the walk found them in.
	slices.SortStableFunc(ps.errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	switch len(ps.errs) {
	case 0:
		p.sha = hashHex(data)
		return p, nil
	case 1:
		return nil, ps.errs[0]
	}
	errs := make([]error, len(ps.errs))
	for i, e := range ps.errs {
		errs[i] = e
	}
	return nil, errors.Join(errs...)
}

// decodeOne decodes the single YAML document in data into its root node.
func decodeOne(data []byte, source string) (root *yaml.Node, err error) {
	defer func() {
		// A panic inside the YAML library must not take osandbox down.
		if v := recover(); v != nil {
			root, err = nil, &Error{source, 1, 1, fmt.Sprintf("invalid YAML: %v", v)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{source, 1, 1, `empty policy: missing required field "version"`}
		}
		return nil, syntaxError(source, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, &Error{source, extra.Line, extra.Column, "a policy file holds one YAML document; found another"}
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(source, err)
	}
	if len(doc.Content) != 1 {
		return nil, &Error{source, doc.Line, doc.Column, "invalid YAML document"}
	}
	return doc.Content[0], nil
}

// syntaxError turns "yaml: line N: msg" into an *Error. The YAML library
// reports no column for syntax errors, so it is 1; for parser (as opposed to
// scanner) errors it reports the 0-based line where the enclosing collection
// starts, which is corrected here to 1-based.
func syntaxError(source string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, m, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, m
				if isParserProblem(msg) {
					line++
				}
			}
		}
	}
	return &Error{source, line, 1, "invalid YAML: " + strings.ReplaceAll(msg, "\n", " ")}
}

// isParserProblem reports whether msg is one of the YAML library's parser
// (not scanner) problems, whose line it reports 0-based.
func isParserProblem(msg string) bool {
	switch msg {
	case "did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"did not find expected '-' indicator", "did not find expected <document start>",
		"did not find expected <stream-start>", "did not find expected key",
		"did not find expected node content", "found duplicate %TAG directive",
		"found duplicate %YAML directive", "found incompatible YAML document",
		"found undefined tag handle":
		return true
	}
	return false
}

// parser walks a YAML node tree into a Policy, collecting every problem.
type parser struct {
	source string
	errs   []*Error
	seen   map[string]bool       // error texts already reported (aliases repeat nodes)
	names  map[string]*yaml.Node // rule name -> node that gave it
	nodes  int
}

func (ps *parser) errorf(n *yaml.Node, format string, args ...any) {
	e := &Error{ps.source, n.Line, n.Column, fmt.Sprintf(format, args...)}
	if ps.seen == nil {
		ps.seen = map[string]bool{}
	}
	if len(ps.errs) >= maxErrors || ps.seen[e.Error()] {
		return
	}
	ps.seen[e.Error()] = true
	ps.errs = append(ps.errs, e)
}

// deref follows aliases and counts the node against maxNodes; it returns nil
// once the budget is spent.
func (ps *parser) deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	ps.nodes++
	if n == nil || ps.nodes > maxNodes {
		if ps.nodes == maxNodes+1 {
			ps.errorf(&yaml.Node{Line: 1, Column: 1}, "policy too large: more than %d YAML nodes after expanding aliases", maxNodes)
		}
		return nil
	}
	return n
}

// field is one key: value pair of a mapping.
type field struct{ key, val *yaml.Node }

// fields checks that n is a mapping whose keys are all in allowed, each at
// most once, and returns them by name.
func (ps *parser) fields(n *yaml.Node, what string, allowed ...string) (map[string]field, bool) {
	if n.Kind != yaml.MappingNode {
		ps.errorf(n, "%s: expected a mapping with fields %s, got %s", what, strings.Join(allowed, ", "), describe(n))
		return nil, false
	}
	out := map[string]field{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := ps.deref(n.Content[i]), n.Content[i+1]
		if k == nil {
			return out, true
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			ps.errorf(k, "%s: expected a field name, got %s", what, describe(k))
		case k.ShortTag() == "!!merge":
			ps.errorf(k, "%s: merge keys (<<) are not supported", what)
		case !contains(allowed, k.Value):
			ps.errorf(k, "%s: unknown field %q (want one of: %s)", what, k.Value, strings.Join(allowed, ", "))
		case out[k.Value].key != nil:
			ps.errorf(k, "%s: duplicate field %q (first at line %d)", what, k.Value, out[k.Value].key.Line)
		default:
			out[k.Value] = field{k, v}
		}
	}
	return out, true
}

// list checks that n is a sequence and returns its items with aliases
// followed. A null value is an empty list. ok is false when n is not a list.
func (ps *parser) list(n *yaml.Node, what string) (items []*yaml.Node, ok bool) {
	if n = ps.deref(n); n == nil {
		return nil, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		ps.errorf(n, "%s: expected a list, got %s", what, describe(n))
		return nil, false
	}
	for _, it := range n.Content {
		if it = ps.deref(it); it == nil {
			return nil, false
		}
		items = append(items, it)
	}
	return items, true
}

// nonEmptyList is list for a field that, when present, must have items.
func (ps *parser) nonEmptyList(f field, what, hint string) ([]*yaml.Node, bool) {
	items, ok := ps.list(f.val, what)
	if ok && len(items) == 0 {
		ps.errorf(f.key, "%s must not be empty%s", what, hint)
		return nil, false
	}
	return items, ok && len(items) > 0
}

// str returns the value of a string scalar.
func (ps *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		ps.errorf(n, "%s: expected a string, got %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

// describe names the kind of a node for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!null":
			return "nothing (null)"
		case "!!int", "!!float", "!!bool":
			return fmt.Sprintf("%s %s", strings.TrimPrefix(n.ShortTag(), "!!"), printable(n.Value))
		}
		return fmt.Sprintf("%q tagged %s", n.Value, printable(n.ShortTag()))
	}
	return "something else"
}

// printable returns s as is when it is short printable ASCII without
// spaces, else quoted, so that no error message spans lines.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '"' {
			return strconv.Quote(s)
		}
	}
	if s == "" || len(s) > 64 {
		return strconv.Quote(s)
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
