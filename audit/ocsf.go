package audit

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// OCSF (Open Cybersecurity Schema Framework) identifiers used by Event.OCSF.
const (
	OCSFVersion              = "1.3.0" // metadata.version of every object
	OCSFCategoryNetwork      = 4       // category_uid: Network Activity
	OCSFClassNetworkActivity = 4001    // connect, close, dns
	OCSFClassHTTPActivity    = 4002    // request, upgrade
)

// Product names the software that wrote the audit log, for OCSF
// metadata.product.
type Product struct {
	Name, Vendor, Version string
}

// DefaultProduct is what a zero Product field becomes.
var DefaultProduct = Product{Name: "osandbox", Vendor: "osandbox", Version: "unknown"}

func (p Product) withDefaults() Product {
	if p.Name == "" {
		p.Name = DefaultProduct.Name
	}
	if p.Vendor == "" {
		p.Vendor = DefaultProduct.Vendor
	}
	if p.Version == "" {
		p.Version = DefaultProduct.Version
	}
	return p
}

// obj is one JSON object of an OCSF event; encoding/json sorts its keys.
type obj = map[string]any

// OCSF maps e to one OCSF 1.3 event object, for SIEMs. ok is false for an
// event with no OCSF form: start and exit (they describe the run, not
// network activity) and unknown kinds.
//
// connect, close and dns become Network Activity (4001); request and upgrade
// HTTP Activity (4002). Every object has class_uid, category_uid, type_uid
// (class_uid*100 + activity_id), activity_id, severity_id, status_id, time
// (Unix milliseconds), metadata (product, version, profiles), src_endpoint
// (the sandbox, by its id) and dst_endpoint (host, dialed IP, port); a
// decision adds action_id and disposition_id (1 allowed, 1 allowed; 2
// denied, 2 blocked) and firewall_rule {name: the deciding rule, or the
// reason when no rule decided; desc: the reason}. HTTP Activity adds
// http_request {http_method, url {scheme, hostname, port, path, url_string},
// the Upgrade header} and http_response {code} when a status was sent. A
// known pid or exe adds actor.process. Fields with no OCSF home (sandbox,
// proto, reason, overflow_bytes, the DNS name and qtype) go in unmapped.
//
// Activities: connect is Open (1), Refuse (5) when denied, Fail (4) when
// allowed but the upstream could not be reached (status 502 or higher);
// close is Close (2) with traffic and duration; dns is Traffic (6) or
// Refuse (5). Requests take the activity of their method (Get 3, Post 6,
// ...; Other 99). Severity is Informational (1) for what was allowed,
// Medium (3) for a denial, High (4) for one by the SSRF guard
// (private_address).
func (e Event) OCSF(p Product) (map[string]any, bool) {
	var class, activity int
	var activityName string
	switch e.Event {
	case EventConnect:
		class = OCSFClassNetworkActivity
		switch {
		case e.Decision != DecisionAllow:
			activity, activityName = 5, "Refuse"
		case e.Status >= 502:
			activity, activityName = 4, "Fail"
		default:
			activity, activityName = 1, "Open"
		}
	case EventClose:
		class, activity, activityName = OCSFClassNetworkActivity, 2, "Close"
	case EventDNS:
		class, activity, activityName = OCSFClassNetworkActivity, 6, "Traffic"
		if e.Decision != DecisionAllow {
			activity, activityName = 5, "Refuse"
		}
	case EventRequest, EventUpgrade:
		class = OCSFClassHTTPActivity
		activity, activityName = httpActivity(e.Method)
	default:
		return nil, false
	}
	p = p.withDefaults()
	o := obj{
		"class_uid":     class,
		"class_name":    map[int]string{OCSFClassNetworkActivity: "Network Activity", OCSFClassHTTPActivity: "HTTP Activity"}[class],
		"category_uid":  OCSFCategoryNetwork,
		"category_name": "Network Activity",
		"activity_id":   activity,
		"activity_name": activityName,
		"type_uid":      class*100 + activity,
		"time":          e.Time.UnixMilli(),
		"metadata":      ocsfMetadata(e, p),
		"src_endpoint":  ocsfSource(e),
		"dst_endpoint":  ocsfDestination(e),
		"message":       ocsfMessage(e),
	}
	setSeverity(o, e)
	setOutcome(o, e)
	if pr := ocsfProcess(e); pr != nil {
		o["actor"] = obj{"process": pr}
	}
	if ci := ocsfConnection(e); ci != nil {
		o["connection_info"] = ci
	}
	switch e.Event {
	case EventClose:
		o["traffic"] = obj{"bytes_out": e.BytesUp, "bytes_in": e.BytesDown, "bytes": e.BytesUp + e.BytesDown}
		ms := e.Duration.Milliseconds()
		o["duration"] = ms
		o["start_time"] = e.Time.UnixMilli() - ms
		o["end_time"] = e.Time.UnixMilli()
	case EventRequest, EventUpgrade:
		o["http_request"] = ocsfHTTPRequest(e)
		if e.Status != 0 {
			o["http_response"] = obj{"code": e.Status}
		}
	}
	o["unmapped"] = ocsfUnmapped(e)
	return o, true
}

// httpActivity maps a method to the HTTP Activity activity_id.
func httpActivity(method string) (int, string) {
	ids := map[string]int{"CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5,
		"POST": 6, "PUT": 7, "TRACE": 8, "PATCH": 9}
	m := strings.ToUpper(method)
	if id, ok := ids[m]; ok {
		return id, m[:1] + strings.ToLower(m[1:])
	}
	return 99, "Other"
}

func ocsfMetadata(e Event, p Product) obj {
	md := obj{
		"version":       OCSFVersion,
		"product":       obj{"name": p.Name, "vendor_name": p.Vendor, "version": p.Version},
		"log_name":      "osandbox audit",
		"event_code":    e.Event,
		"original_time": e.Time.UTC().Format(TimeFormat),
	}
	profiles := []string{"security_control"}
	if e.PID != 0 || e.Exe != "" {
		profiles = append(profiles, "host")
	}
	md["profiles"] = profiles
	if e.Sandbox != "" {
		md["correlation_uid"] = e.Sandbox
	}
	return md
}

func setSeverity(o obj, e Event) {
	switch {
	case e.Decision == DecisionDeny && e.Reason == "private_address":
		o["severity_id"], o["severity"] = 4, "High"
	case e.Decision == DecisionDeny:
		o["severity_id"], o["severity"] = 3, "Medium"
	default:
		o["severity_id"], o["severity"] = 1, "Informational"
	}
}

// setOutcome sets status, action and disposition, and the rule that
// decided. A close event has no decision of its own, but follows only a
// connection that was allowed.
func setOutcome(o obj, e Event) {
	denied := e.Decision == DecisionDeny
	failed := denied || (e.Event == EventConnect && e.Status >= 502)
	if failed {
		o["status_id"], o["status"] = 2, "Failure"
	} else {
		o["status_id"], o["status"] = 1, "Success"
	}
	if denied {
		o["action_id"], o["action"] = 2, "Denied"
		o["disposition_id"], o["disposition"] = 2, "Blocked"
	} else {
		o["action_id"], o["action"] = 1, "Allowed"
		o["disposition_id"], o["disposition"] = 1, "Allowed"
	}
	if e.Reason != "" {
		o["status_detail"] = e.Reason
	}
	if e.Decision != "" {
		name := e.Rule
		if name == "" {
			name = e.Reason
		}
		o["firewall_rule"] = obj{"name": name, "desc": e.Reason}
	}
}

// ocsfSource is the sandboxed side: osandbox knows it by the run's id.
func ocsfSource(e Event) obj {
	src := obj{"name": "osandbox sandbox"}
	if e.Sandbox != "" {
		src["uid"] = e.Sandbox
		src["name"] = "osandbox sandbox " + e.Sandbox
	}
	return src
}

// ocsfDestination is where the sandbox wanted to go: the name it asked for,
// the address osandbox dialed, and the port.
func ocsfDestination(e Event) obj {
	dst := obj{}
	host := e.Host
	if e.Event == EventDNS {
		host = e.Name
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		dst["ip"] = a.Unmap().String()
	} else if host != "" {
		dst["hostname"] = host
	}
	if ap, err := netip.ParseAddrPort(e.Dst); err == nil {
		dst["ip"] = ap.Addr().Unmap().String()
	}
	if e.Port != 0 {
		dst["port"] = e.Port
	}
	if len(dst) == 0 {
		dst["name"] = "unknown"
	}
	return dst
}

func ocsfProcess(e Event) obj {
	if e.PID == 0 && e.Exe == "" {
		return nil
	}
	pr := obj{}
	if e.PID != 0 {
		pr["pid"] = e.PID
	}
	if e.Exe != "" {
		name := filepath.Base(e.Exe)
		pr["name"] = name
		pr["file"] = obj{"name": name, "path": e.Exe, "type_id": 1, "type": "Regular File"}
	}
	return pr
}

func ocsfConnection(e Event) obj {
	ci := obj{"direction_id": 2, "direction": "Outbound", "protocol_name": "tcp", "protocol_num": 6}
	if e.Event == EventDNS {
		ci["protocol_name"], ci["protocol_num"] = "udp", 17
	}
	if e.Conn != 0 {
		ci["uid"] = strconv.FormatUint(e.Conn, 10)
	}
	return ci
}

func ocsfHTTPRequest(e Event) obj {
	scheme, defPort := "http", 80
	if e.Proto == ProtoHTTPS || (e.Proto != ProtoHTTP && e.Port == 443) {
		scheme, defPort = "https", 443
	}
	path := StripQuery(e.Path)
	authority := e.Host
	if strings.IndexByte(authority, ':') >= 0 && authority[0] != '[' { // an IPv6 literal
		authority = "[" + authority + "]"
	}
	if e.Port != 0 && e.Port != defPort {
		authority += ":" + strconv.Itoa(e.Port)
	}
	u := obj{"scheme": scheme, "hostname": e.Host, "port": e.Port, "path": path,
		"url_string": scheme + "://" + authority + path}
	req := obj{"http_method": e.Method, "url": u}
	if e.Upgrade != "" {
		req["http_headers"] = []obj{{"name": "Upgrade", "value": e.Upgrade}}
	}
	return req
}

func ocsfUnmapped(e Event) obj {
	u := obj{"event": e.Event}
	for k, v := range map[string]string{
		FieldSandbox: e.Sandbox, FieldProto: e.Proto, FieldReason: e.Reason,
		FieldName: e.Name, FieldQType: e.QType,
	} {
		if v != "" {
			u[k] = v
		}
	}
	if e.Conn != 0 {
		u[FieldConn] = e.Conn
	}
	if e.Event == EventUpgrade {
		u[FieldOverflowBytes] = e.OverflowBytes
	}
	return u
}

// ocsfMessage is a one-line summary in the form of the stderr denial
// line, with control characters and spaces from the sandbox escaped.
func ocsfMessage(e Event) string {
	if line, ok := e.DenialLine(); ok {
		return strings.TrimPrefix(line, "osandbox: ")
	}
	var b strings.Builder
	switch e.Event {
	case EventConnect:
		b.WriteString("allowed CONNECT ")
		writeSafe(&b, net.JoinHostPort(e.Host, strconv.Itoa(e.Port)))
	case EventDNS:
		b.WriteString("allowed DNS ")
		writeSafe(&b, e.Name)
		b.WriteByte(' ')
		writeSafe(&b, e.QType)
	case EventClose:
		b.WriteString("closed ")
		writeSafe(&b, net.JoinHostPort(e.Host, strconv.Itoa(e.Port)))
		b.WriteString(": " + itoa(e.BytesUp) + " bytes up, " + itoa(e.BytesDown) + " bytes down")
		return b.String()
	default:
		b.WriteString("allowed ")
		writeSafe(&b, e.Method)
		b.WriteByte(' ')
		writeURL(&b, e)
		if e.Upgrade != "" {
			b.WriteString(" upgrade=")
			writeSafe(&b, e.Upgrade)
		}
	}
	b.WriteString(" (")
	writeSafe(&b, e.Reason)
	b.WriteByte(')')
	return b.String()
}
