package policies

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Seen is one thing a sandboxed program was allowed to do, as an audit log
// records it; Suggest writes a policy from a list of them.
type Seen struct {
	Host string
	Port int
	// Method is "" for a connection seen only at connection level (a blind
	// CONNECT tunnel, captured TCP); otherwise the request was seen at L7
	// (forward proxy or an inspected tunnel) with this Path and Upgrade.
	Method  string
	Path    string
	Upgrade string
	// Dst is the address the proxy dialed for it; the zero Addr if unknown.
	Dst netip.Addr
}

// Suggest returns the smallest policy that allows exactly what seen shows,
// as far as a policy can say it:
//
//   - a host:port seen at connection level gets a rule without http (which
//     allows everything there: a blind tunnel's contents were not seen);
//   - a host:port seen only at L7 gets http entries listing exactly the
//     method, path and Upgrade combinations seen: paths that share the same
//     methods (and upgrades) share an entry, so no entry allows a method on
//     a path where it was not seen;
//   - hosts with the same ports and the same entries share one rule, and a
//     host's ports share a rule when their entries are the same;
//   - a special address (loopback, private, ...) the proxy dialed for a
//     host *name* goes into allow_private, as its own /32 or /128: without
//     it the SSRF guard would refuse what the log shows. An IP host needs
//     none: a rule naming an IP lets the guard dial it.
//
// Hosts are kept exact (no wildcards are invented). A path segment that a
// pattern cannot express (one holding "*") becomes "*"; a method that is
// not all letters becomes "*". warnings lists what was skipped or widened.
// The result has no deny rules and no names but the ones Suggest gives:
// the first host of the rule, with "+N" when it has more, made unique.
func Suggest(seen []Seen) (p *Policy, warnings []string) {
	type hostPort struct {
		host string
		port int
	}
	conn := map[hostPort]bool{}
	l7 := map[hostPort]map[string]map[string]map[string]bool{} // -> path -> method -> upgrades
	private := map[netip.Prefix]bool{}
	hostOf := map[string]target{}
	for _, s := range seen {
		t, ok := parseTarget(s.Host)
		if !ok || s.Port < 1 || s.Port > 65535 {
			warnings = append(warnings, fmt.Sprintf("skipped %q port %d: not a valid host and port", s.Host, s.Port))
			continue
		}
		hp := hostPort{t.String(), s.Port}
		hostOf[hp.host] = t
		if dst := unmap(s.Dst.WithZone("")); dst.IsValid() && Special(dst) && !t.addr.IsValid() {
			private[netip.PrefixFrom(dst, dst.BitLen())] = true
		}
		if s.Method == "" {
			conn[hp] = true
			continue
		}
		method := strings.ToUpper(s.Method)
		if !isLetters(method) {
			warnings = append(warnings, fmt.Sprintf("method %q on %s:%d cannot be written in a policy: allowed any method there", s.Method, hp.host, hp.port))
			method = "*"
		}
		path, widened := suggestPath(s.Path)
		if widened {
			warnings = append(warnings, fmt.Sprintf("path %q on %s:%d cannot be written exactly: allowed %q", s.Path, hp.host, hp.port, path))
		}
		if l7[hp] == nil {
			l7[hp] = map[string]map[string]map[string]bool{}
		}
		if l7[hp][path] == nil {
			l7[hp][path] = map[string]map[string]bool{}
		}
		if l7[hp][path][method] == nil {
			l7[hp][path][method] = map[string]bool{}
		}
		if up := strings.ToLower(s.Upgrade); up != "" {
			if !isUpgradeToken(up) {
				up = "*"
			}
			l7[hp][path][method][up] = true
		}
	}

	// Each host's ports, grouped by what is allowed there.
	type group struct {
		spec  string // "" for connection level
		http  []HTTPRule
		ports []int
		hosts []string
	}
	perHost := map[string]map[string]*group{}
	for _, hp := range append(keys(conn), keys(l7)...) {
		var entries []HTTPRule
		if !conn[hp] {
			entries = suggestEntries(l7[hp])
		}
		spec := fmt.Sprint(entries)
		if perHost[hp.host] == nil {
			perHost[hp.host] = map[string]*group{}
		}
		g := perHost[hp.host][spec]
		if g == nil {
			g = &group{spec: spec, http: entries}
			perHost[hp.host][spec] = g
		}
		if !slices.Contains(g.ports, hp.port) {
			g.ports = append(g.ports, hp.port)
		}
	}
	// Hosts with the same ports and entries share a rule.
	rules := map[string]*group{}
	for host, gs := range perHost {
		for _, g := range gs {
			slices.Sort(g.ports)
			k := fmt.Sprint(g.ports, g.spec)
			if rules[k] == nil {
				rules[k] = &group{spec: g.spec, http: g.http, ports: g.ports}
			}
			rules[k].hosts = append(rules[k].hosts, host)
		}
	}
	p = &Policy{}
	names := map[string]bool{}
	for _, g := range rules {
		slices.Sort(g.hosts)
		r := Rule{Ports: g.ports, HTTP: g.http}
		for _, h := range g.hosts {
			r.Hosts = append(r.Hosts, patternFor(hostOf[h]))
		}
		p.Allow = append(p.Allow, r)
	}
	slices.SortFunc(p.Allow, func(a, b Rule) int {
		if c := strings.Compare(a.Hosts[0].String(), b.Hosts[0].String()); c != 0 {
			return c
		}
		return slices.Compare(a.Ports, b.Ports)
	})
	for i := range p.Allow {
		r := &p.Allow[i]
		name := r.Hosts[0].String()
		if len(r.Hosts) > 1 {
			name += "+" + strconv.Itoa(len(r.Hosts)-1)
		}
		unique := name
		for n := 2; names[unique]; n++ {
			unique = name + "-" + strconv.Itoa(n)
		}
		names[unique] = true
		r.Name = unique
	}
	for pf := range private {
		p.AllowPrivate = append(p.AllowPrivate, pf)
	}
	slices.SortFunc(p.AllowPrivate, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return p, warnings
}

// suggestEntries turns path -> method -> upgrades into http entries: one per
// set of (methods, upgrades), listing the paths that have exactly it.
func suggestEntries(paths map[string]map[string]map[string]bool) []HTTPRule {
	byKey := map[string]*HTTPRule{}
	for path, methods := range paths {
		// Methods of this path with the same upgrades go together.
		byUps := map[string][]string{}
		for m, ups := range methods {
			k := strings.Join(sortedKeys(ups), " ")
			byUps[k] = append(byUps[k], m)
		}
		for ups, ms := range byUps {
			slices.Sort(ms)
			k := strings.Join(ms, " ") + "|" + ups
			e := byKey[k]
			if e == nil {
				e = &HTTPRule{Methods: ms}
				if ups != "" {
					e.Upgrade = strings.Split(ups, " ")
				}
				byKey[k] = e
			}
			e.Paths = append(e.Paths, path)
		}
	}
	var out []HTTPRule
	for _, e := range byKey {
		slices.Sort(e.Paths)
		out = append(out, *e)
	}
	// In path order: that is how people read an API.
	slices.SortFunc(out, func(a, b HTTPRule) int {
		return cmp.Or(strings.Compare(a.Paths[0], b.Paths[0]), slices.Compare(a.Methods, b.Methods),
			slices.Compare(a.Upgrade, b.Upgrade))
	})
	return out
}

// suggestPath turns a logged path into a pattern matching it; widened is
// true when it had to match more than that one path.
func suggestPath(path string) (pattern string, widened bool) {
	if path == "" {
		return "/", false
	}
	if !strings.HasPrefix(path, "/") {
		return anyPath, true // OPTIONS *, or something odd
	}
	if checkPathPattern(path) == nil {
		return path, false
	}
	segs := strings.Split(path[1:], "/")
	for i, s := range segs {
		if strings.Contains(s, "*") || s == "." || s == ".." {
			segs[i] = "*"
		}
	}
	p := "/" + strings.Join(segs, "/")
	if checkPathPattern(p) != nil {
		return anyPath, true
	}
	return p, true
}

func patternFor(t target) HostPattern {
	if t.addr.IsValid() {
		return HostPattern{kind: hostAddr, prefix: netip.PrefixFrom(t.addr, t.addr.BitLen())}
	}
	return HostPattern{kind: hostExact, name: t.name}
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := keys(m)
	slices.Sort(out)
	return out
}

// YAML renders p as a version 1 policy file that Parse reads back to the
// same rules. Every string is double-quoted; a rule without a name (built
// in code) gets none, so Parse names it "allow[i]" or "deny[i]".
func (p *Policy) YAML() []byte {
	var b bytes.Buffer
	b.WriteString("version: 1\n")
	writeRules(&b, "allow", p.Allow)
	if len(p.Deny) > 0 {
		writeRules(&b, "deny", p.Deny)
	}
	if len(p.AllowPrivate) > 0 {
		var list []string
		for _, pf := range p.AllowPrivate {
			list = append(list, pf.String())
		}
		b.WriteString("allow_private: " + yamlList(list) + "\n")
	}
	return b.Bytes()
}

func writeRules(b *bytes.Buffer, list string, rules []Rule) {
	if len(rules) == 0 {
		b.WriteString(list + ": []\n")
		return
	}
	b.WriteString(list + ":\n")
	for _, r := range rules {
		var hosts []string
		for _, h := range r.Hosts {
			hosts = append(hosts, h.String())
		}
		prefix := "  - "
		if r.Name != "" {
			b.WriteString(prefix + "name: " + yamlString(r.Name) + "\n")
			prefix = "    "
		}
		b.WriteString(prefix + "hosts: " + yamlList(hosts) + "\n")
		if len(r.Ports) > 0 {
			ports := make([]string, len(r.Ports))
			for i, n := range r.Ports {
				ports[i] = strconv.Itoa(n)
			}
			b.WriteString("    ports: [" + strings.Join(ports, ", ") + "]\n")
		}
		if len(r.HTTP) == 0 {
			continue
		}
		b.WriteString("    http:\n")
		for _, e := range r.HTTP {
			prefix := "      - "
			for _, f := range []struct {
				key  string
				vals []string
			}{{"methods", e.Methods}, {"paths", e.Paths}, {"upgrade", e.Upgrade}} {
				if len(f.vals) == 0 {
					continue
				}
				b.WriteString(prefix + f.key + ": " + yamlList(f.vals) + "\n")
				prefix = "        "
			}
			if prefix == "      - " { // an entry with nothing: any method, any path
				b.WriteString(prefix + "paths: [\"/**\"]\n")
			}
		}
	}
}

// yamlString quotes s as a JSON string, which YAML reads as a double-quoted
// scalar.
func yamlString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

func yamlList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = yamlString(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
