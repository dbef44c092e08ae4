package policies

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// This file maps the YAML tree onto the version 1 schema (DESIGN 1.2).

func (ps *parser) policy(root *yaml.Node) *Policy {
	p := &Policy{}
	fs, ok := ps.fields(root, "policy", "version", "allow", "deny", "allow_private")
	if !ok {
		return p
	}
	if f, ok := fs["version"]; !ok {
		ps.errorf(root, `missing required field "version" (want version: 1)`)
	} else if v := ps.deref(f.val); v != nil {
		switch {
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int" && v.Value == "1":
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int":
			ps.errorf(v, "unsupported policy version %s (this osandbox understands version 1)", printable(v.Value))
		default:
			ps.errorf(v, "version: expected 1, got %s", describe(v))
		}
	}
	if f, ok := fs["allow"]; ok {
		p.Allow = ps.rules(f, "allow")
	}
	if f, ok := fs["deny"]; ok {
		p.Deny = ps.rules(f, "deny")
	}
	if f, ok := fs["allow_private"]; ok {
		p.AllowPrivate = ps.allowPrivate(f)
	}
	return p
}

func (ps *parser) rules(f field, list string) []Rule {
	items, ok := ps.list(f.val, list)
	if !ok {
		return nil
	}
	var out []Rule
	for i, it := range items {
		if r, ok := ps.rule(it, list, i); ok {
			out = append(out, r)
		}
	}
	return out
}

func (ps *parser) rule(n *yaml.Node, list string, i int) (Rule, bool) {
	what := fmt.Sprintf("%s[%d]", list, i)
	r := Rule{Name: what}
	fs, ok := ps.fields(n, what, "name", "hosts", "ports", "http")
	if !ok {
		return r, false
	}
	nerr := len(ps.errs)
	nameNode := n
	if f, ok := fs["name"]; ok {
		if v := ps.deref(f.val); v != nil {
			nameNode = v
			if s, ok := ps.str(v, what+".name"); ok {
				r.Name = s
				ps.checkName(v, what, s)
			}
		}
	}
	if prev, dup := ps.names[r.Name]; dup {
		ps.errorf(nameNode, "duplicate rule name %q (first at %d:%d)", r.Name, prev.Line, prev.Column)
	} else {
		ps.names[r.Name] = nameNode
	}

	if f, ok := fs["hosts"]; !ok {
		ps.errorf(n, "%s: missing required field \"hosts\"", what)
	} else {
		items, _ := ps.nonEmptyList(f, what+".hosts", "")
		for _, it := range items {
			if s, ok := ps.str(it, what+".hosts"); ok {
				h, err := ParseHostPattern(s)
				if err != nil {
					ps.errorf(it, "%s.hosts: %v", what, err)
					continue
				}
				r.Hosts = append(r.Hosts, h)
			}
		}
	}

	r.Ports = DefaultPorts()
	if f, ok := fs["ports"]; ok {
		r.Ports = nil
		items, _ := ps.nonEmptyList(f, what+".ports", " (omit it for the default, 80 and 443)")
		for _, it := range items {
			if port, ok := ps.port(it, what+".ports"); ok {
				r.Ports = append(r.Ports, port)
			}
		}
	}

	if f, ok := fs["http"]; ok {
		items, _ := ps.nonEmptyList(f, what+".http", " (omit it for a connection-level rule)")
		for j, it := range items {
			if e, ok := ps.httpEntry(it, fmt.Sprintf("%s.http[%d]", what, j), list); ok {
				r.HTTP = append(r.HTTP, e)
			}
		}
	}
	return r, len(ps.errs) == nerr
}

func (ps *parser) checkName(n *yaml.Node, what, s string) {
	if strings.TrimSpace(s) == "" {
		ps.errorf(n, "%s.name must not be empty (omit it to get %q)", what, what)
		return
	}
	for _, c := range s {
		if c < ' ' || c == 0x7f {
			ps.errorf(n, "%s.name: control character %q not allowed", what, c)
			return
		}
	}
}

func (ps *parser) port(n *yaml.Node, what string) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		ps.errorf(n, "%s: expected a port number (1-65535), got %s", what, describe(n))
		return 0, false
	}
	digits := strings.TrimLeft(n.Value, "+-")
	switch {
	case strings.Trim(digits, "0123456789") != "":
		ps.errorf(n, "%s: write port %s in decimal", what, printable(n.Value))
		return 0, false
	case len(digits) > 1 && digits[0] == '0':
		ps.errorf(n, "%s: port %s has a leading zero, which YAML reads as octal; write it without", what, printable(n.Value))
		return 0, false
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < 1 || v > 65535 {
		ps.errorf(n, "%s: port %s out of range (1-65535)", what, printable(n.Value))
		return 0, false
	}
	return v, true
}

func (ps *parser) httpEntry(n *yaml.Node, what, list string) (HTTPRule, bool) {
	e := HTTPRule{Methods: []string{"*"}, Paths: []string{anyPath}}
	fs, ok := ps.fields(n, what, "methods", "paths", "upgrade")
	if !ok {
		return e, false
	}
	nerr := len(ps.errs)
	if f, ok := fs["methods"]; ok {
		e.Methods = nil
		items, _ := ps.nonEmptyList(f, what+".methods", ` (omit it, or write ["*"], for any method)`)
		for _, it := range items {
			if s, ok := ps.str(it, what+".methods"); ok {
				if s != "*" && !isLetters(s) {
					ps.errorf(it, "%s.methods: invalid method %q (want letters, or \"*\" for any)", what, s)
					continue
				}
				e.Methods = append(e.Methods, strings.ToUpper(s))
			}
		}
	}
	if f, ok := fs["paths"]; ok {
		e.Paths = nil
		items, _ := ps.nonEmptyList(f, what+".paths", ` (omit it, or write ["/**"], for any path)`)
		for _, it := range items {
			if s, ok := ps.str(it, what+".paths"); ok {
				if err := checkPathPattern(s); err != nil {
					ps.errorf(it, "%s.paths: %v", what, err)
					continue
				}
				e.Paths = append(e.Paths, s)
			}
		}
	}
	if f, ok := fs["upgrade"]; ok {
		if list == "deny" {
			ps.errorf(f.key, "%s: upgrade is not supported in deny rules (they match on method and path; the Upgrade is ignored)", what)
		}
		items, _ := ps.nonEmptyList(f, what+".upgrade", " (omit it to allow no Upgrade)")
		for _, it := range items {
			if s, ok := ps.str(it, what+".upgrade"); ok {
				if s != "*" && !isUpgradeToken(s) {
					ps.errorf(it, "%s.upgrade: invalid protocol %q", what, s)
					continue
				}
				e.Upgrade = append(e.Upgrade, strings.ToLower(s))
			}
		}
	}
	return e, len(ps.errs) == nerr
}

func (ps *parser) allowPrivate(f field) []netip.Prefix {
	items, ok := ps.list(f.val, "allow_private")
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, it := range items {
		s, ok := ps.str(it, "allow_private")
		if !ok {
			continue
		}
		h, err := ParseHostPattern(s)
		if err != nil {
			ps.errorf(it, "allow_private: %v", err)
			continue
		}
		pf, ok := h.Prefix()
		if !ok {
			ps.errorf(it, "allow_private: %q is not an IP address or CIDR", s)
			continue
		}
		out = append(out, pf)
	}
	return out
}

func isLetters(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return s != ""
}

// isUpgradeToken reports whether s is an HTTP Upgrade protocol: a token,
// optionally followed by "/" and a version token (RFC 9110 7.8).
func isUpgradeToken(s string) bool {
	name, version, hasVersion := strings.Cut(s, "/")
	return isToken(name) && (!hasVersion || isToken(version))
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isNameByte(c) && !strings.ContainsRune("!#$%&'*+.^`|~", rune(c)) {
			return false
		}
	}
	return s != ""
}
