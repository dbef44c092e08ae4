package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ocsfBaseRequired are the attributes OCSF 1.3 requires of every event
// class (base_event), plus what osandbox promises on each object.
var ocsfBaseRequired = []string{
	"class_uid", "category_uid", "type_uid", "activity_id", "severity_id", "time", "metadata",
	"status_id", "action_id", "disposition_id", "src_endpoint", "dst_endpoint",
}

// checkOCSF fails t unless o has every attribute its class requires, with
// values of the right type and consistent ids.
func checkOCSF(t *testing.T, o map[string]any, hasStatus bool) {
	t.Helper()
	for _, k := range ocsfBaseRequired {
		if _, ok := o[k]; !ok {
			t.Errorf("lacks %s: %v", k, o)
		}
	}
	num := func(k string) int {
		f, ok := o[k].(float64)
		if !ok {
			t.Errorf("%s = %v, want a number", k, o[k])
		}
		return int(f)
	}
	class, activity := num("class_uid"), num("activity_id")
	if num("category_uid") != OCSFCategoryNetwork {
		t.Errorf("category_uid %v, want 4", o["category_uid"])
	}
	if num("type_uid") != class*100+activity {
		t.Errorf("type_uid %v, want %d", o["type_uid"], class*100+activity)
	}
	if ms := num("time"); ms < 1e12 {
		t.Errorf("time %d is not in Unix milliseconds", ms)
	}
	if a, d := num("action_id"), num("disposition_id"); a != d || (a != 1 && a != 2) {
		t.Errorf("action_id %d, disposition_id %d: want both 1 or both 2", a, d)
	}
	md, _ := o["metadata"].(map[string]any)
	if md["version"] != OCSFVersion || !strings.HasPrefix(OCSFVersion, "1.") {
		t.Errorf("metadata.version %v, want 1.x.y", md["version"])
	}
	prod, _ := md["product"].(map[string]any)
	if prod["name"] != "osandbox" || prod["vendor_name"] == nil || prod["version"] == nil {
		t.Errorf("metadata.product %v, want name osandbox, vendor_name and version", prod)
	}
	for _, ep := range []string{"src_endpoint", "dst_endpoint"} {
		m, _ := o[ep].(map[string]any)
		if m["ip"] == nil && m["hostname"] == nil && m["name"] == nil && m["uid"] == nil {
			t.Errorf("%s %v has none of ip, hostname, name, uid", ep, o[ep])
		}
	}
	switch class {
	case OCSFClassNetworkActivity:
		if ci, _ := o["connection_info"].(map[string]any); ci["direction_id"] == nil {
			t.Errorf("connection_info %v lacks direction_id", o["connection_info"])
		}
	case OCSFClassHTTPActivity:
		req, _ := o["http_request"].(map[string]any)
		u, _ := req["url"].(map[string]any)
		if req["http_method"] == nil || u["hostname"] == nil || u["path"] == nil || u["port"] == nil || u["scheme"] == nil {
			t.Errorf("http_request %v lacks http_method or url {hostname, path, port, scheme}", o["http_request"])
		}
		if _, ok := o["http_response"]; ok != hasStatus {
			t.Errorf("http_response present = %v, want %v (status known)", ok, hasStatus)
		}
	default:
		t.Errorf("class_uid %d, want 4001 or 4002", class)
	}
}

// TestOCSFRequired exports every event of the sample log and checks each
// emitted object for its class's required attributes.
func TestOCSFRequired(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "export", "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	events, err := ReadAll(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Export(&out, bytes.NewReader(in), ExportOptions{Format: FormatOCSF}); err != nil {
		t.Fatal(err)
	}
	var kept []Event
	for _, e := range events {
		if e.Event != EventStart && e.Event != EventExit {
			kept = append(kept, e)
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(kept) {
		t.Fatalf("%d OCSF objects, want %d (every event but start and exit)", len(lines), len(kept))
	}
	for i, line := range lines {
		var o map[string]any
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		t.Run(kept[i].Event+"/"+kept[i].Decision, func(t *testing.T) { checkOCSF(t, o, kept[i].Status != 0) })
	}
}

// TestOCSFMapping pins the mapping, field by field, for one event of each
// kind.
func TestOCSFMapping(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	ms := float64(at.UnixMilli())
	cases := []struct {
		name string
		e    Event
		want map[string]any // dotted path -> value (JSON-decoded)
	}{
		{"connect allowed", Event{Time: at, Sandbox: "s", Event: EventConnect, Conn: 1, Decision: DecisionAllow,
			Reason: "rule_allow", Rule: "npm", Proto: ProtoConnect, Method: "CONNECT", Host: "registry.npmjs.org",
			Port: 443, Status: 200, Dst: "104.16.1.34:443", PID: 7, Exe: "/usr/bin/node"},
			map[string]any{"class_uid": 4001.0, "activity_id": 1.0, "type_uid": 400101.0, "action_id": 1.0,
				"disposition_id": 1.0, "severity_id": 1.0, "status_id": 1.0, "time": ms,
				"dst_endpoint.hostname": "registry.npmjs.org", "dst_endpoint.ip": "104.16.1.34", "dst_endpoint.port": 443.0,
				"src_endpoint.uid": "s", "firewall_rule.name": "npm", "firewall_rule.desc": "rule_allow",
				"actor.process.pid": 7.0, "actor.process.file.path": "/usr/bin/node", "actor.process.name": "node",
				"connection_info.uid": "1", "metadata.product.name": "osandbox", "metadata.version": "1.3.0"}},
		{"connect denied", Event{Time: at, Sandbox: "s", Event: EventConnect, Decision: DecisionDeny,
			Reason: "no_matching_rule", Proto: ProtoConnect, Method: "CONNECT", Host: "evil.example", Port: 443, Status: 403},
			map[string]any{"activity_id": 5.0, "type_uid": 400105.0, "action_id": 2.0, "disposition_id": 2.0,
				"severity_id": 3.0, "status_id": 2.0, "firewall_rule.name": "no_matching_rule",
				"message": "denied CONNECT evil.example:443 (no_matching_rule)"}},
		{"connect upstream down", Event{Time: at, Event: EventConnect, Decision: DecisionAllow, Reason: "rule_allow",
			Host: "a.example", Port: 443, Status: 502},
			map[string]any{"activity_id": 4.0, "action_id": 1.0, "status_id": 2.0}},
		{"close", Event{Time: at, Sandbox: "s", Event: EventClose, Conn: 1, Host: "a.example", Port: 443,
			BytesUp: 10, BytesDown: 20, Duration: 1500 * time.Millisecond},
			map[string]any{"class_uid": 4001.0, "activity_id": 2.0, "traffic.bytes_out": 10.0, "traffic.bytes_in": 20.0,
				"traffic.bytes": 30.0, "duration": 1500.0, "start_time": ms - 1500, "end_time": ms}},
		{"dns denied", Event{Time: at, Event: EventDNS, Decision: DecisionDeny, Reason: "no_matching_rule",
			Proto: ProtoDNS, Name: "evil.example", QType: "A"},
			map[string]any{"class_uid": 4001.0, "activity_id": 5.0, "dst_endpoint.hostname": "evil.example",
				"connection_info.protocol_name": "udp", "unmapped.qtype": "A"}},
		{"request ssrf", Event{Time: at, Event: EventRequest, Decision: DecisionDeny, Reason: "private_address",
			Proto: ProtoHTTP, Method: "GET", Host: "169.254.169.254", Port: 80, Path: "/latest/meta-data/", Status: 403},
			map[string]any{"class_uid": 4002.0, "activity_id": 3.0, "type_uid": 400203.0, "severity_id": 4.0,
				"dst_endpoint.ip": "169.254.169.254", "http_request.http_method": "GET",
				"http_request.url.url_string": "http://169.254.169.254/latest/meta-data/",
				"http_request.url.scheme":     "http", "http_response.code": 403.0}},
		{"upgrade", Event{Time: at, Event: EventUpgrade, Decision: DecisionAllowUpgrade, Reason: "rule_allow", Rule: "chat",
			Proto: ProtoHTTPS, Method: "GET", Host: "::1", Port: 8443, Path: "/ws", Upgrade: "websocket", Status: 101},
			map[string]any{"class_uid": 4002.0, "activity_id": 3.0, "action_id": 1.0, "dst_endpoint.ip": "::1",
				"http_request.url.url_string": "https://[::1]:8443/ws", "http_response.code": 101.0,
				"unmapped.overflow_bytes": 0.0}},
		{"request other method", Event{Time: at, Event: EventRequest, Decision: DecisionAllow, Reason: "learn_mode",
			Proto: ProtoHTTP, Method: "PROPFIND", Host: "dav.example", Port: 80, Path: "/"},
			map[string]any{"activity_id": 99.0, "type_uid": 400299.0, "firewall_rule.name": "learn_mode"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, ok := c.e.OCSF(Product{Version: "v1"})
			if !ok {
				t.Fatal("no OCSF form")
			}
			b, _ := json.Marshal(raw)
			var o map[string]any
			json.Unmarshal(b, &o)
			checkOCSF(t, o, c.e.Status != 0)
			for path, want := range c.want {
				if got := lookup(o, path); got != want {
					t.Errorf("%s = %#v, want %#v", path, got, want)
				}
			}
		})
	}
	for _, kind := range []string{EventStart, EventExit, "bogus"} {
		if _, ok := (Event{Event: kind}).OCSF(Product{}); ok {
			t.Errorf("%s event has an OCSF form", kind)
		}
	}
}

func lookup(o map[string]any, path string) any {
	var v any = o
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
