package proxy

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/osandbox/osandbox/audit"
	"github.com/osandbox/osandbox/policies"
)

// syntheticNet is where the DNS stub's answers come from (RFC 2544's
// benchmarking range): addresses that mean nothing outside this run, which
// the capture listener maps back to the names they were handed out for.
var syntheticNet = netip.MustParsePrefix("198.18.0.0/15")

// syntheticTTL is short so that a client does not cache an address of a
// previous run.
const syntheticTTL = 5

// nameMap hands out one synthetic address per name, for this run.
type nameMap struct {
	mu     sync.Mutex
	byName map[string]netip.Addr
	byAddr map[netip.Addr]string
	next   netip.Addr
}

func newNameMap() *nameMap {
	return &nameMap{byName: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{},
		next: syntheticNet.Addr().Next()}
}

// addrFor returns name's address, assigning one on first use. ok is false
// when the range is exhausted.
func (m *nameMap) addrFor(name string) (netip.Addr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.byName[name]; ok {
		return a, true
	}
	if !syntheticNet.Contains(m.next) {
		return netip.Addr{}, false
	}
	a := m.next
	m.next = a.Next()
	m.byName[name], m.byAddr[a] = a, name
	return a, true
}

// nameOf returns the name a synthetic address was handed out for.
func (m *nameMap) nameOf(a netip.Addr) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.byAddr[a.Unmap()]
	return n, ok
}

// ServeDNS answers DNS queries on pc until Close: an A query for a name
// some allow rule could match gets a synthetic address; AAAA and other
// types for such names get an empty answer; every other name gets
// NXDOMAIN. No query is ever sent upstream, so a denied name does not leak
// through DNS either. The proxy resolves real names itself when it dials.
func (p *Proxy) ServeDNS(pc net.PacketConn) error {
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(p.answerDNS)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.Close()
		return nil
	}
	p.dnsServers = append(p.dnsServers, srv)
	p.mu.Unlock()
	err := srv.ActivateAndServe()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil
	}
	return err
}

func (p *Proxy) answerDNS(w dns.ResponseWriter, q *dns.Msg) {
	resp := p.dnsAnswer(q)
	_ = w.WriteMsg(resp)
}

// dnsAnswer builds the reply to q, auditing each question.
func (p *Proxy) dnsAnswer(q *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(q)
	resp.RecursionAvailable = true
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		resp.Rcode = dns.RcodeNotImplemented
		return resp
	}
	question := q.Question[0]
	name := strings.TrimSuffix(strings.ToLower(question.Name), ".")
	qtype := dns.TypeToString[question.Qtype]
	if qtype == "" {
		qtype = dns.TypeToString[dns.TypeNone]
	}
	ev := audit.Event{Time: time.Now(), Event: audit.EventDNS, Proto: audit.ProtoDNS, Name: name, QType: qtype}
	rule, ok := p.cfg.Policy.NameAllowed(name)
	if p.cfg.Learn {
		rule, ok = "", true
	}
	if !ok {
		resp.Rcode = dns.RcodeNameError
		ev.Decision, ev.Reason = audit.DecisionDeny, string(policies.ReasonNoMatchingRule)
		p.cfg.Audit.Emit(ev)
		return resp
	}
	ev.Decision, ev.Rule, ev.Reason = audit.DecisionAllow, rule, string(policies.ReasonRuleAllow)
	if p.cfg.Learn {
		ev.Reason = string(policies.ReasonLearnMode)
	}
	// A name that is an IP literal in some spelling ("2130706433") is that
	// address: answer it as such, so the connection is decided as the IP.
	var literal netip.Addr
	if canon, ok := policies.CanonicalHost(name); ok {
		literal, _ = netip.ParseAddr(canon)
	}
	switch {
	case literal.IsValid():
		if literal.Is4() && question.Qtype == dns.TypeA && question.Qclass == dns.ClassINET {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: syntheticTTL},
				A:   literal.AsSlice(),
			})
		}
	case question.Qtype == dns.TypeA && question.Qclass == dns.ClassINET:
		if a, ok := p.names.addrFor(name); ok {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: syntheticTTL},
				A:   a.AsSlice(),
			})
		} else {
			resp.Rcode = dns.RcodeServerFailure
		}
	}
	p.cfg.Audit.Emit(ev)
	return resp
}
