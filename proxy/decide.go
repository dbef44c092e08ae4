package proxy

import (
	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

func denyDecision(reason policies.Reason) policies.Decision {
	return policies.Decision{Action: policies.Deny, Reason: reason}
}

// decide asks the policy; in learn mode every decision allows, and the
// SSRF guard still applies at dial time.
func (p *Proxy) decide(req policies.Request) policies.Decision {
	if p.cfg.Learn {
		return policies.Decision{Action: policies.Allow, Reason: policies.ReasonLearnMode}
	}
	return p.cfg.Policy.Decide(req)
}

func decisionString(d policies.Decision) string {
	if d.Action == policies.Allow {
		return audit.DecisionAllow
	}
	return audit.DecisionDeny
}
