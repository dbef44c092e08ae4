package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

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

// response builds the denial as an *http.Response, for goproxy's hooks and
// for writing on a raw connection.
func (d denial) response(req *http.Request) *http.Response {
	body := d.body()
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Osandbox-Decision", d.headerValue())
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return &http.Response{
		StatusCode:    d.Status,
		Status:        fmt.Sprintf("%d %s", d.Status, http.StatusText(d.Status)),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// write sends the denial on a raw connection and asks the client to close.
func (d denial) write(w io.Writer) error {
	body := d.body()
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", d.Status, http.StatusText(d.Status))
	fmt.Fprintf(&b, "Content-Type: application/json\r\nX-Osandbox-Decision: %s\r\n", d.headerValue())
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	_, err := io.WriteString(w, b.String()+string(body))
	return err
}

// serve writes the denial through a ResponseWriter.
func (d denial) serve(w http.ResponseWriter) {
	body := d.body()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Osandbox-Decision", d.headerValue())
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(d.Status)
	_, _ = w.Write(body)
}
