package policies

// NameAllowed reports whether some allow rule could allow a connection to
// name, on any port, and names the first such rule. The DNS stub answers
// only such names, so a denied name never leaves the sandbox even as a
// query. Deny rules are not consulted: they may be port- or path-specific,
// and the connection is decided again when it is made.
func (p *Policy) NameAllowed(name string) (rule string, ok bool) {
	if p == nil {
		return "", false
	}
	canon, valid := CanonicalHost(name)
	if !valid {
		return "", false
	}
	for i := range p.Allow {
		for _, h := range p.Allow[i].Hosts {
			if h.Match(canon) {
				return p.Allow[i].Name, true
			}
		}
	}
	return "", false
}
