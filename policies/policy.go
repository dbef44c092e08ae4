package policies

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Policy is a parsed policy file: default deny, allow rules, deny rules that
// win over them, and the private ranges the SSRF guard lets through.
type Policy struct {
	// Allow rules, in file order. nil: nothing is allowed.
	Allow []Rule
	// Deny rules, in file order; a match wins over any allow rule. nil: none.
	Deny []Rule
	// AllowPrivate lists special ranges (see Special) the proxy may dial
	// whatever rule decided. nil: none.
	AllowPrivate []netip.Prefix

	sha string // hex SHA-256 of the source; "" for a Policy built in code
}

// Rule is one entry of the allow or deny list.
type Rule struct {
	// Name identifies the rule in decisions and the audit log. From a file
	// without a name it is "allow[i]" or "deny[i]"; from QuickRule it is the
	// flag text, "--allow HOST[:PORT]".
	Name string
	// Hosts the rule applies to; never empty after parsing.
	Hosts []HostPattern
	// Ports the rule applies to; never empty after parsing. Empty (only in a
	// Rule built in code) means the default, 80 and 443.
	Ports []int
	// HTTP lists the requests the rule matches. nil: a connection-level rule,
	// which matches every request (and any Upgrade) on its hosts and ports.
	HTTP []HTTPRule
}

// HTTPRule matches requests by method and path, and for allow rules says
// which Upgrade protocols those requests may ask for.
type HTTPRule struct {
	// Methods, upper-cased; "*" is any method. Empty: any method.
	Methods []string
	// Paths are patterns starting with "/": a "*" segment matches exactly
	// one non-empty segment, "**" any number of segments (zero included),
	// other segments literally and case-sensitively. Empty: any path.
	Paths []string
	// Upgrade lists the lower-cased protocols (e.g. "websocket") a matching
	// request may ask to switch to; "*" is any. nil: no Upgrade allowed.
	// Deny rules ignore it (the parser rejects it there).
	Upgrade []string
}

// DefaultPorts are the ports a rule applies to when it names none.
func DefaultPorts() []int { return []int{80, 443} }

// maxPolicySize bounds what Load reads and Parse accepts.
const maxPolicySize = 4 << 20

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded default policy: version 1, no rules, so it
// denies all egress. Each call returns a fresh copy.
func Default() *Policy {
	p, err := Parse(defaultYAML, "default.yaml")
	if err != nil {
		panic("policies: embedded default.yaml is invalid: " + err.Error())
	}
	return p
}

// Load reads and parses a policy file. Errors look like "FILE:LINE:COL: message"
// (several such lines when the file has several problems).
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy %s: %w", path, err)
	}
	return Parse(data, path)
}

// WithAllow returns a copy of p with rules appended to its allow list (for
// --allow combined with --policy). p is not modified. A nil p is taken as
// the empty policy.
func (p *Policy) WithAllow(rules ...Rule) *Policy {
	if p == nil {
		p = &Policy{}
	}
	q := &Policy{
		Allow:        append(slices.Clone(p.Allow), rules...),
		Deny:         slices.Clone(p.Deny),
		AllowPrivate: slices.Clone(p.AllowPrivate),
	}
	var b strings.Builder
	b.WriteString(p.SHA256())
	b.WriteByte('\n')
	for _, r := range rules {
		writeRule(&b, "allow", r)
	}
	q.sha = hashHex([]byte(b.String()))
	return q
}

// SHA256 returns the hex SHA-256 that identifies p in the audit "start"
// event: of the source bytes for a parsed file (the embedded bytes for
// Default); for WithAllow, of the base policy's hash and the added rules; for
// a Policy built in code, of a canonical rendering of its rules.
func (p *Policy) SHA256() string {
	if p == nil {
		p = &Policy{}
	}
	if p.sha != "" {
		return p.sha
	}
	var b strings.Builder
	for _, r := range p.Allow {
		writeRule(&b, "allow", r)
	}
	for _, r := range p.Deny {
		writeRule(&b, "deny", r)
	}
	for _, pf := range p.AllowPrivate {
		fmt.Fprintf(&b, "allow_private %s\n", pf)
	}
	return hashHex([]byte(b.String()))
}

// writeRule renders r in a canonical one-line form for hashing.
func writeRule(b *strings.Builder, list string, r Rule) {
	fmt.Fprintf(b, "%s name=%q hosts=%q ports=%v", list, r.Name, r.Hosts, r.Ports)
	for _, h := range r.HTTP {
		fmt.Fprintf(b, " http(methods=%q paths=%q upgrade=%q)", h.Methods, h.Paths, h.Upgrade)
	}
	b.WriteByte('\n')
}

func hashHex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
