package policies

import (
	"net/netip"
	"strings"
)

// Action is what a Decision says to do.
type Action int

const (
	Deny Action = iota
	Allow
)

// String returns "deny" or "allow", as written in the audit log.
func (a Action) String() string {
	if a == Allow {
		return "allow"
	}
	return "deny"
}

// Reason says why a decision was made; the values are the audit log's
// documented reason strings. Decide returns only the first five; the others
// are for outcomes the proxy decides itself.
type Reason string

const (
	ReasonRuleAllow          Reason = "rule_allow"
	ReasonRuleDeny           Reason = "rule_deny"
	ReasonNoMatchingRule     Reason = "no_matching_rule"
	ReasonUpgradeNotAllowed  Reason = "upgrade_not_allowed"
	ReasonBadRequest         Reason = "bad_request" // Decide: host or port invalid
	ReasonPrivateAddress     Reason = "private_address"
	ReasonUnsolicitedUpgrade Reason = "unsolicited_upgrade"
	ReasonUpgradeMismatch    Reason = "upgrade_mismatch"
	ReasonHostMismatch       Reason = "host_mismatch"
	ReasonHeaderTooLarge     Reason = "header_too_large"
	ReasonLearnMode          Reason = "learn_mode"
)

// Request is what is decided. Method == "" means a connection-level decision
// (CONNECT, captured TCP): only Host and Port count. Otherwise it is an HTTP
// request.
type Request struct {
	// Host as the client asked for it; Decide canonicalises it as
	// CanonicalHost does, and denies with bad_request if that fails.
	Host string
	// Port, 1-65535; anything else is denied with bad_request.
	Port int
	// Method of the HTTP request, matched case-insensitively; "" for a
	// connection-level decision.
	Method string
	// Path without the query string, already normalised by the proxy.
	// "" is taken as "/".
	Path string
	// Upgrade is the lower-cased protocol the request asks to switch to; ""
	// if none.
	Upgrade string
}

// Decision is the outcome of Decide.
type Decision struct {
	Action Action
	// Rule is the name of the deciding rule; "" when no rule matched.
	Rule   string
	Reason Reason
	// Inspect (connection-level decisions only) is true when some allow or
	// deny rule matching host:port has http rules, so the proxy must
	// inspect the requests at L7 rather than tunnel blind.
	Inspect bool
	// Addrs are the IP and CIDR host patterns of the deciding allow rule,
	// which the SSRF guard lets through; nil if it has none or nothing was
	// allowed.
	Addrs []netip.Prefix
}

// Decide decides r against p: default deny; allowed when an allow rule
// matches and no deny rule does. It is pure: no I/O, no logging. A nil p
// denies everything.
//
// At connection level a deny rule without http denies; one with http only
// sets Inspect. The deciding allow rule is the first matching one without
// http if there is one (its Addrs are then the guard's), else the first
// matching one with http.
//
// For a request, a deny rule denies when it has no http or one of its http
// entries matches method and path (the Upgrade does not matter). Otherwise
// the first allow rule that matches decides: one without http allows any
// request; an http entry allows when it matches method and path and, if an
// Upgrade is asked for, lists it. When entries matched but none permitted
// the Upgrade, the result is upgrade_not_allowed naming the first such rule.
func (p *Policy) Decide(r Request) Decision {
	if p == nil {
		return Decision{Action: Deny, Reason: ReasonNoMatchingRule}
	}
	t, ok := parseTarget(r.Host)
	if !ok || r.Port < 1 || r.Port > 65535 {
		return Decision{Action: Deny, Reason: ReasonBadRequest}
	}
	if r.Method == "" {
		return p.decideConn(t, r.Port)
	}
	return p.decideRequest(t, r)
}

func (p *Policy) decideConn(t target, port int) Decision {
	var d Decision
	var deny, allow *Rule
	for i := range p.Deny {
		rl := &p.Deny[i]
		if !rl.matchesConn(t, port) {
			continue
		}
		if len(rl.HTTP) > 0 {
			d.Inspect = true
		} else if deny == nil {
			deny = rl
		}
	}
	for i := range p.Allow {
		rl := &p.Allow[i]
		if !rl.matchesConn(t, port) {
			continue
		}
		if len(rl.HTTP) > 0 {
			d.Inspect = true
			if allow == nil {
				allow = rl
			}
		} else if allow == nil || len(allow.HTTP) > 0 {
			allow = rl
		}
	}
	switch {
	case deny != nil:
		d.Action, d.Rule, d.Reason = Deny, deny.Name, ReasonRuleDeny
	case allow != nil:
		d.Action, d.Rule, d.Reason = Allow, allow.Name, ReasonRuleAllow
		d.Addrs = allow.addrs()
	default:
		d.Action, d.Reason = Deny, ReasonNoMatchingRule
	}
	return d
}

func (p *Policy) decideRequest(t target, r Request) Decision {
	for i := range p.Deny {
		rl := &p.Deny[i]
		if !rl.matchesConn(t, r.Port) {
			continue
		}
		if len(rl.HTTP) == 0 {
			return Decision{Action: Deny, Rule: rl.Name, Reason: ReasonRuleDeny}
		}
		for j := range rl.HTTP {
			if rl.HTTP[j].matches(r.Method, r.Path) {
				return Decision{Action: Deny, Rule: rl.Name, Reason: ReasonRuleDeny}
			}
		}
	}
	var noUpgrade *Rule
	for i := range p.Allow {
		rl := &p.Allow[i]
		if !rl.matchesConn(t, r.Port) {
			continue
		}
		if len(rl.HTTP) == 0 {
			return Decision{Action: Allow, Rule: rl.Name, Reason: ReasonRuleAllow, Addrs: rl.addrs()}
		}
		for j := range rl.HTTP {
			e := &rl.HTTP[j]
			if !e.matches(r.Method, r.Path) {
				continue
			}
			if r.Upgrade == "" || e.allowsUpgrade(r.Upgrade) {
				return Decision{Action: Allow, Rule: rl.Name, Reason: ReasonRuleAllow, Addrs: rl.addrs()}
			}
			if noUpgrade == nil {
				noUpgrade = rl
			}
		}
	}
	if noUpgrade != nil {
		return Decision{Action: Deny, Rule: noUpgrade.Name, Reason: ReasonUpgradeNotAllowed}
	}
	return Decision{Action: Deny, Reason: ReasonNoMatchingRule}
}

// matchesConn reports whether the rule applies to host t and port.
func (rl *Rule) matchesConn(t target, port int) bool {
	if !matchPort(rl.Ports, port) {
		return false
	}
	for i := range rl.Hosts {
		if rl.Hosts[i].matchTarget(&t) {
			return true
		}
	}
	return false
}

func matchPort(ports []int, port int) bool {
	if len(ports) == 0 {
		return port == 80 || port == 443
	}
	for _, p := range ports {
		if p == port {
			return true
		}
	}
	return false
}

// addrs returns the prefixes of the rule's IP and CIDR patterns, or nil.
func (rl *Rule) addrs() []netip.Prefix {
	var out []netip.Prefix
	for _, h := range rl.Hosts {
		if pf, ok := h.Prefix(); ok {
			out = append(out, pf)
		}
	}
	return out
}

func (e *HTTPRule) matches(method, path string) bool {
	return e.matchesMethod(method) && e.matchesPath(path)
}

func (e *HTTPRule) matchesMethod(method string) bool {
	if len(e.Methods) == 0 {
		return true
	}
	for _, m := range e.Methods {
		if m == "*" || strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}

func (e *HTTPRule) matchesPath(path string) bool {
	if len(e.Paths) == 0 {
		return true
	}
	for _, pat := range e.Paths {
		if matchPath(pat, path) {
			return true
		}
	}
	return false
}

func (e *HTTPRule) allowsUpgrade(proto string) bool {
	for _, u := range e.Upgrade {
		if u == "*" || strings.EqualFold(u, proto) {
			return true
		}
	}
	return false
}
