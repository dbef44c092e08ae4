package policies

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Explanation says how a policy decides one request, and why: the outcome,
// the connection-level decision under it, every rule that names the host,
// and what the SSRF guard will do. Policy.Explain builds it; it is for
// people (`osandbox policy explain`), not for the proxy.
type Explanation struct {
	// Request as decided, with Host in canonical form.
	Request Request
	// Decision is exactly what Decide returns for Request.
	Decision Decision
	// Conn is the connection-level decision for Host:Port: whether a
	// CONNECT is let through at all, and whether its requests are then
	// inspected (Conn.Inspect). For a connection-level Request it equals
	// Decision.
	Conn Decision
	// Steps are the rules whose hosts match Host, deny rules first, each
	// list in file order: those Decide weighed, and those that missed only
	// on the port.
	Steps []Step
	// SSRF is a note on the SSRF guard for this host; "" when none applies.
	SSRF string
}

// Step is one rule's part in an Explanation.
type Step struct {
	List  string // "allow" or "deny"
	Index int    // position in that list
	Rule  string // the rule's name
	// Match says whether the rule matched the request (for a deny rule
	// with http at connection level: it never denies the connection).
	Match bool
	// Deciding is true for the rule Decision names.
	Deciding bool
	// Why says in words what matched and what did not.
	Why string
}

// Explain decides r as Decide does and says why. It is pure.
func (p *Policy) Explain(r Request) Explanation {
	if p == nil {
		p = &Policy{}
	}
	x := Explanation{Request: r, Decision: p.Decide(r)}
	t, ok := parseTarget(r.Host)
	if !ok {
		x.Conn = x.Decision
		return x
	}
	x.Request.Host = t.String()
	x.Conn = p.Decide(Request{Host: r.Host, Port: r.Port})
	lists := []struct {
		name  string
		rules []Rule
	}{{"deny", p.Deny}, {"allow", p.Allow}}
	for _, l := range lists {
		for i := range l.rules {
			rl := &l.rules[i]
			pat, ok := rl.matchingHost(t)
			if !ok {
				continue
			}
			st := Step{List: l.name, Index: i, Rule: rl.Name}
			st.Match, st.Why = rl.explain(l.name, pat, r)
			x.Steps = append(x.Steps, st)
		}
	}
	// The deciding rule is the first step of the right list with its name.
	decidingList := "allow"
	if x.Decision.Reason == ReasonRuleDeny {
		decidingList = "deny"
	}
	for i := range x.Steps {
		if st := &x.Steps[i]; x.Decision.Rule != "" && st.List == decidingList && st.Rule == x.Decision.Rule {
			st.Deciding = true
			break
		}
	}
	x.SSRF = p.ssrfNote(t, x.Decision)
	return x
}

func (t target) String() string {
	if t.addr.IsValid() {
		return t.addr.String()
	}
	return t.name
}

// matchingHost returns the first of the rule's host patterns that matches t.
func (rl *Rule) matchingHost(t target) (HostPattern, bool) {
	for i := range rl.Hosts {
		if rl.Hosts[i].matchTarget(&t) {
			return rl.Hosts[i], true
		}
	}
	return HostPattern{}, false
}

// explain says whether the rule (of list) matches r, whose host pat matched.
func (rl *Rule) explain(list string, pat HostPattern, r Request) (bool, string) {
	why := fmt.Sprintf("host matches %q", pat.String())
	if !matchPort(rl.Ports, r.Port) {
		ports := rl.Ports
		if len(ports) == 0 {
			ports = DefaultPorts()
		}
		return false, fmt.Sprintf("%s, but port %d is not in its ports %v", why, r.Port, ports)
	}
	why += fmt.Sprintf(", port %d", r.Port)
	if len(rl.HTTP) == 0 {
		return true, why + ": a connection-level rule (no http), so it covers every request and upgrade there"
	}
	if r.Method == "" {
		if list == "deny" {
			return false, why + ": it has http rules, so it does not refuse the connection; its requests are inspected and checked one by one"
		}
		return true, why + ": it has http rules, so the connection is let through and inspected at L7 (TLS intercepted on a TLS port); each request is then checked"
	}
	path := r.Path
	if path == "" {
		path = "/"
	}
	req := r.Method + " " + path
	for j := range rl.HTTP {
		e := &rl.HTTP[j]
		if !e.matches(r.Method, r.Path) {
			continue
		}
		entry := fmt.Sprintf("http[%d] %s", j, e.describe())
		switch {
		case list == "deny":
			return true, fmt.Sprintf("%s: %s matches %s", why, entry, req)
		case r.Upgrade == "" || e.allowsUpgrade(r.Upgrade):
			up := ""
			if r.Upgrade != "" {
				up = " with upgrade " + r.Upgrade
			}
			return true, fmt.Sprintf("%s: %s matches %s%s", why, entry, req, up)
		default:
			return false, fmt.Sprintf("%s: %s matches %s but does not permit upgrade %q (upgrade_not_allowed unless a later entry does)", why, entry, req, r.Upgrade)
		}
	}
	var entries []string
	for j := range rl.HTTP {
		entries = append(entries, fmt.Sprintf("http[%d] %s", j, rl.HTTP[j].describe()))
	}
	return false, fmt.Sprintf("%s, but no http entry matches %s (%s)", why, req, strings.Join(entries, "; "))
}

func (e *HTTPRule) describe() string {
	s := fmt.Sprintf("(methods %s, paths %s", strings.Join(e.Methods, " "), strings.Join(e.Paths, " "))
	if len(e.Upgrade) > 0 {
		s += ", upgrade " + strings.Join(e.Upgrade, " ")
	}
	return s + ")"
}

// ssrfNote says what the SSRF guard does with host t under decision d.
func (p *Policy) ssrfNote(t target, d Decision) string {
	if !t.addr.IsValid() {
		if d.Action != Allow {
			return ""
		}
		var extra []string
		for _, pf := range d.Addrs {
			extra = append(extra, pf.String())
		}
		for _, pf := range p.AllowPrivate {
			extra = append(extra, pf.String())
		}
		if len(extra) > 0 {
			return fmt.Sprintf("%s is a name: the proxy resolves it and dials public addresses, and private ones only in %s; "+
				"an answer with any other private, loopback or link-local address is refused (private_address)", t.name, strings.Join(extra, ", "))
		}
		return fmt.Sprintf("%s is a name: the proxy resolves it and dials only public addresses; "+
			"an answer with a private, loopback or link-local address is refused (private_address)", t.name)
	}
	ip := t.addr
	if !Special(ip) {
		return ""
	}
	kind := specialKind(ip)
	if d.Action != Allow {
		// Would the guard let it through if a rule allowed it?
		if p.AddrAllowed(Decision{}, ip) {
			return fmt.Sprintf("%s is %s; allow_private lets the proxy dial it once a rule allows it", ip, kind)
		}
		return fmt.Sprintf("%s is %s: even with an allow rule, the SSRF guard refuses it (private_address) unless the rule names it in hosts or allow_private lists it", ip, kind)
	}
	if !p.AddrAllowed(d, ip) {
		return fmt.Sprintf("%s is %s: the policy allows it, but the SSRF guard refuses to dial it (private_address); name it in the rule's hosts or add it to allow_private", ip, kind)
	}
	for _, pf := range d.Addrs {
		if pf.Contains(unmap(ip)) || pf.Contains(ip) {
			return fmt.Sprintf("%s is %s; the SSRF guard dials it because rule %q names %s", ip, kind, d.Rule, pf)
		}
	}
	return fmt.Sprintf("%s is %s; the SSRF guard dials it because allow_private covers it", ip, kind)
}

// specialKind names the kind of special address ip is, for people.
func specialKind(ip netip.Addr) string {
	ip = unmap(ip.WithZone(""))
	cgnat := netip.MustParsePrefix("100.64.0.0/10")
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip == netip.MustParseAddr("169.254.169.254") || ip == netip.MustParseAddr("fd00:ec2::254"):
		return "the cloud metadata endpoint"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsPrivate() && ip.Is4():
		return "a private (RFC 1918) address"
	case ip.IsPrivate():
		return "a unique local (ULA) address"
	case cgnat.Contains(ip):
		return "a carrier-grade NAT (100.64.0.0/10) address"
	case ip.IsUnspecified():
		return "the unspecified address"
	case ip.IsMulticast():
		return "a multicast address"
	}
	return "a reserved address"
}

// ParseTarget turns what a person types to `osandbox policy explain` into a
// Request: a URL (http, https, ws or wss; ws and wss ask to upgrade to
// websocket), or HOST:PORT ([IPV6]:PORT), which is a connection-level
// request unless method is set (then its path is "/"). For a URL, method
// defaults to GET. The URL's path is cleaned as the proxy cleans it ("."
// and ".." resolved, empty segments dropped, query removed).
func ParseTarget(s, method string) (Request, error) {
	method = strings.ToUpper(method)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return Request{}, fmt.Errorf("target %q: %v", s, err)
		}
		r := Request{Host: u.Hostname(), Method: method, Path: cleanPath(u.EscapedPath())}
		def := 80
		switch strings.ToLower(u.Scheme) {
		case "http":
		case "https":
			def = 443
		case "ws":
			r.Upgrade = "websocket"
		case "wss":
			def, r.Upgrade = 443, "websocket"
		default:
			return Request{}, fmt.Errorf("target %q: scheme %q is not one of http, https, ws, wss", s, u.Scheme)
		}
		r.Port = def
		if ps := u.Port(); ps != "" {
			n, err := strconv.Atoi(ps)
			if err != nil || n < 1 || n > 65535 {
				return Request{}, fmt.Errorf("target %q: bad port %q", s, ps)
			}
			r.Port = n
		}
		if r.Method == "" {
			r.Method = "GET"
		}
		return r, checkHost(s, r)
	}
	host, port, err := splitQuick(s)
	if err != nil || port == "" {
		return Request{}, fmt.Errorf("target %q: want a URL or HOST:PORT", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return Request{}, fmt.Errorf("target %q: bad port %q", s, port)
	}
	r := Request{Host: host, Port: n, Method: method}
	if method != "" {
		r.Path = "/"
	}
	return r, checkHost(s, r)
}

func checkHost(s string, r Request) error {
	if _, ok := CanonicalHost(r.Host); !ok {
		return fmt.Errorf("target %q: %q is not a valid host", s, r.Host)
	}
	return nil
}

// cleanPath resolves "." and ".." and drops empty segments, keeping a
// trailing slash, as the proxy does before it decides.
func cleanPath(raw string) string {
	var out []string
	for _, s := range strings.Split(raw, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	p := "/" + strings.Join(out, "/")
	if len(out) > 0 && strings.HasSuffix(raw, "/") {
		p += "/"
	}
	return p
}
