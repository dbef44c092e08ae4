package proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/osandbox/osandbox/policies"
)

// denial is what a refused client is told (DESIGN 1.4).
type denial struct {
	Status int             `json:"-"`
	Error  string          `json:"error"`
	Reason policies.Reason `json:"reason"`
	Method string          `json:"method"`
	Host   string          `json:"host"`
	Port   int             `json:"port"`
	Path   string          `json:"path,omitempty"`
	Hint   string          `json:"hint,omitempty"`
}

func newDenial(reason policies.Reason, method, host string, port int, path string) denial {
	d := denial{Status: http.StatusForbidden, Error: "policy_denied", Reason: reason,
		Method: method, Host: host, Port: port, Path: path}
	hostPort := net.JoinHostPort(host, strconv.Itoa(port))
	switch reason {
	case policies.ReasonNoMatchingRule:
		d.Hint = "add an allow rule for " + hostPort
	case policies.ReasonRuleDeny:
		d.Hint = "a deny rule matches " + hostPort + "; deny wins over allow"
	case policies.ReasonPrivateAddress:
		d.Hint = host + " resolves to a private address; name it in allow_private or in a rule's hosts"
	case policies.ReasonUpgradeNotAllowed:
		d.Hint = "add the protocol to upgrade: in the http rule for " + hostPort
	case policies.ReasonHostMismatch:
		d.Status = http.StatusMisdirectedRequest
		d.Error = "host_mismatch"
		d.Hint = "the Host header must name the host the connection is for"
	case policies.ReasonBadRequest:
		d.Status = http.StatusBadRequest
		d.Error = "bad_request"
	case policies.ReasonHeaderTooLarge:
		d.Status = http.StatusRequestHeaderFieldsTooLarge
		d.Error = "bad_request"
	}
	return d
}

func (d denial) body() []byte {
	b, _ := json.Marshal(d)
	return append(b, '\n')
}

func (d denial) headerValue() string {
	return "deny; reason=" + string(d.Reason)
}

func (d denial) reply() jsonReply {
	return jsonReply{status: d.Status, decision: d.headerValue(), body: d.body()}
}

func (d denial) write(w io.Writer) error { return d.reply().write(w) }

// upstreamReply says why an upstream could not be reached or did not
// answer; it is not a policy decision, so it has no X-Osandbox-Decision.
func upstreamReply(err error) jsonReply {
	b, _ := json.Marshal(map[string]string{"error": "upstream_error", "detail": err.Error()})
	return jsonReply{status: http.StatusBadGateway, body: append(b, '\n')}
}

// jsonReply is a response osandbox makes itself (a denial, an upstream
// error), sent raw on a client connection that then closes.
type jsonReply struct {
	status   int
	decision string // X-Osandbox-Decision; "" for none
	body     []byte
}

func (j jsonReply) header() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if j.decision != "" {
		h.Set("X-Osandbox-Decision", j.decision)
	}
	h.Set("Content-Length", strconv.Itoa(len(j.body)))
	return h
}

// write sends the reply on a raw connection and tells the client it closes.
func (j jsonReply) write(w io.Writer) error {
	if err := writeHead(w, &http.Response{StatusCode: j.status, Header: j.header()}, true); err != nil {
		return err
	}
	_, err := w.Write(j.body)
	return err
}
