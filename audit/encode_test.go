package audit

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)

// allFields is every JSON field name, in the order they are written.
var allFields = []string{
	FieldTime, FieldSandbox, FieldEvent, FieldConn, FieldDecision, FieldReason,
	FieldRule, FieldProto, FieldMethod, FieldHost, FieldPort, FieldPath,
	FieldUpgrade, FieldStatus, FieldDst, FieldOverflowBytes, FieldBytesUp,
	FieldBytesDown, FieldDurationMS, FieldPID, FieldExe, FieldCommand,
	FieldPolicySHA256, FieldExitCode, FieldName, FieldQType,
}

// encodingCases has one event per kind with every must-be-present field at
// its zero value, and keys: exactly the fields its line must hold.
var encodingCases = []struct {
	name string
	e    Event
	keys []string
}{
	{
		name: "start",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventStart, Command: []string{}},
		keys: []string{FieldCommand, FieldPolicySHA256},
	},
	{
		name: "start with pid and command",
		e: Event{Time: t0, Sandbox: "s1", Event: EventStart, PID: 42, Exe: "/usr/bin/npm",
			Command: []string{"npm", "install", `a "quoted" arg`}, PolicySHA256: "ab12"},
		keys: []string{FieldCommand, FieldPolicySHA256, FieldPID, FieldExe},
	},
	{
		name: "connect denied",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventConnect, Decision: DecisionDeny},
		keys: []string{FieldDecision, FieldReason, FieldProto, FieldHost, FieldPort},
	},
	{
		name: "connect allowed",
		e: Event{Time: t0, Sandbox: "s1", Event: EventConnect, Conn: 7, Decision: DecisionAllow,
			Reason: "rule_allow", Rule: "npm", Proto: ProtoConnect, Host: "registry.npmjs.org",
			Port: 443, Dst: "104.16.0.1:443", PID: 99, Exe: "/usr/bin/node"},
		keys: []string{FieldConn, FieldDecision, FieldReason, FieldRule, FieldProto, FieldHost,
			FieldPort, FieldDst, FieldPID, FieldExe},
	},
	{
		name: "request zero",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventRequest},
		keys: []string{FieldDecision, FieldReason, FieldProto, FieldMethod, FieldHost, FieldPort, FieldPath},
	},
	{
		name: "request with status",
		e: Event{Time: t0, Sandbox: "s1", Event: EventRequest, Conn: 3, Decision: DecisionDeny,
			Reason: "no_matching_rule", Proto: ProtoHTTPS, Method: "POST", Host: "api.github.com",
			Port: 443, Path: "/gists/1", Status: 403},
		keys: []string{FieldConn, FieldDecision, FieldReason, FieldProto, FieldMethod, FieldHost,
			FieldPort, FieldPath, FieldStatus},
	},
	{
		name: "upgrade zero overflow",
		e: Event{Time: t0, Sandbox: "s1", Event: EventUpgrade, Conn: 4, Decision: DecisionAllowUpgrade,
			Reason: "rule_allow", Rule: "chat", Proto: ProtoHTTP, Method: "GET", Host: "chat.example",
			Port: 80, Path: "/socket/x", Upgrade: "websocket", Status: 101},
		keys: []string{FieldConn, FieldDecision, FieldReason, FieldRule, FieldProto, FieldMethod,
			FieldHost, FieldPort, FieldPath, FieldUpgrade, FieldStatus, FieldOverflowBytes},
	},
	{
		name: "dns",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventDNS, Decision: DecisionAllow, Name: "a.example"},
		keys: []string{FieldDecision, FieldReason, FieldProto, FieldName, FieldQType},
	},
	{
		name: "close zero",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventClose, Conn: 9},
		keys: []string{FieldConn, FieldBytesUp, FieldBytesDown, FieldDurationMS},
	},
	{
		name: "close with counts",
		e: Event{Time: t0, Sandbox: "s1", Event: EventClose, Conn: 9, BytesUp: 1 << 40,
			BytesDown: 5, Duration: 1500 * time.Millisecond},
		keys: []string{FieldConn, FieldBytesUp, FieldBytesDown, FieldDurationMS},
	},
	{
		name: "exit zero",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventExit},
		keys: []string{FieldExitCode},
	},
	{
		name: "exit signal",
		e:    Event{Time: t0, Sandbox: "s1", Event: EventExit, ExitCode: 130, PID: 12},
		keys: []string{FieldExitCode, FieldPID},
	},
	{
		name: "unknown kind keeps what is set",
		e:    Event{Time: t0, Sandbox: "s1", Event: "future", Host: "h", Port: 1},
		keys: []string{FieldHost, FieldPort},
	},
}

func decodeMap(t *testing.T, line []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("line is not JSON: %v\n%s", err, line)
	}
	return m
}

func TestEncodingFieldPresence(t *testing.T) {
	for _, tc := range encodingCases {
		t.Run(tc.name, func(t *testing.T) {
			line, err := tc.e.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			m := decodeMap(t, line)
			want := append([]string{FieldTime, FieldSandbox, FieldEvent}, tc.keys...)
			for _, k := range allFields {
				_, got := m[k]
				if got != slices.Contains(want, k) {
					t.Errorf("field %q present=%v, want %v\n%s", k, got, !got, line)
				}
			}
			if len(m) != len(want) {
				t.Errorf("got %d fields, want %d: %s", len(m), len(want), line)
			}
			if m[FieldEvent] != tc.e.Event || m[FieldSandbox] != tc.e.Sandbox {
				t.Errorf("event/sandbox = %v/%v", m[FieldEvent], m[FieldSandbox])
			}
			if m[FieldTime] != "2025-03-04T05:06:07.000000890Z" {
				t.Errorf("time = %v", m[FieldTime])
			}
		})
	}
}

func TestEncodingRoundTrip(t *testing.T) {
	for _, tc := range encodingCases {
		t.Run(tc.name, func(t *testing.T) {
			line, _ := tc.e.MarshalJSON()
			got, err := ParseLine(line)
			if err != nil {
				t.Fatalf("ParseLine: %v\n%s", err, line)
			}
			if !reflect.DeepEqual(got, tc.e) {
				t.Errorf("round trip\n got %+v\nwant %+v\nline %s", got, tc.e, line)
			}
		})
	}
}

func TestEncodingValues(t *testing.T) {
	e := Event{Time: t0.In(time.FixedZone("X", 3600)), Event: EventClose, Conn: 1<<64 - 1,
		BytesUp: 10, BytesDown: 20, Duration: 2*time.Second + 999*time.Microsecond}
	line, _ := e.MarshalJSON()
	m := decodeMap(t, line)
	if m[FieldTime] != "2025-03-04T05:06:07.000000890Z" {
		t.Errorf("time not UTC: %v", m[FieldTime])
	}
	if m[FieldDurationMS] != float64(2000) {
		t.Errorf("duration_ms = %v, want integer 2000", m[FieldDurationMS])
	}
	if !strings.Contains(string(line), `"conn":18446744073709551615`) {
		t.Errorf("max conn id mangled: %s", line)
	}
	got, _ := ParseLine(line)
	if got.Conn != e.Conn || got.Duration != 2*time.Second {
		t.Errorf("decoded conn %d duration %v", got.Conn, got.Duration)
	}

	start := Event{Time: t0, Event: EventStart}
	line, _ = start.MarshalJSON()
	if c, ok := decodeMap(t, line)[FieldCommand].([]any); !ok || len(c) != 0 {
		t.Errorf("nil command on start should encode as []: %s", line)
	}
}

func TestPathQueryStripped(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/x?token=secret", "/x"},
		{"/x?", "/x"},
		{"/x#frag", "/x"},
		{"/a/b", "/a/b"},
		{"?only", ""},
		{"", ""},
	} {
		e := Event{Time: t0, Event: EventRequest, Path: tc.path}
		line, _ := e.MarshalJSON()
		if strings.Contains(string(line), "secret") {
			t.Errorf("query leaked: %s", line)
		}
		if got := decodeMap(t, line)[FieldPath]; got != tc.want {
			t.Errorf("path %q encoded as %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestStringEscaping(t *testing.T) {
	for _, s := range []string{
		`plain`, `"quoted"`, `back\slash`, "new\nline\r\t", "\x00\x01\x1f\x7f",
		"héllo 世界", "\u2028\u2029", "<>&", "emoji 😀",
	} {
		e := Event{Time: t0, Event: EventRequest, Host: s}
		line, _ := e.MarshalJSON()
		if strings.ContainsAny(string(line), "\n\r") {
			t.Errorf("raw newline in line for %q: %s", s, line)
		}
		if got := decodeMap(t, line)[FieldHost]; got != s {
			t.Errorf("host %q decoded as %q", s, got)
		}
	}
	// Invalid UTF-8 becomes U+FFFD, as encoding/json does, keeping the line valid.
	e := Event{Time: t0, Event: EventRequest, Host: "a\xffb\xc3"}
	line, _ := e.MarshalJSON()
	if got := decodeMap(t, line)[FieldHost]; got != "a\ufffdb\ufffd" {
		t.Errorf("invalid UTF-8 decoded as %q", got)
	}
}

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Event
		wantErr    bool
	}{
		{name: "unknown fields ignored", line: `{"event":"exit","exit_code":3,"new_field":{"x":[1]}}`,
			want: Event{Event: EventExit, ExitCode: 3}},
		{name: "fractional duration", line: `{"event":"close","duration_ms":1.5}`,
			want: Event{Event: EventClose, Duration: 1500 * time.Microsecond}},
		{name: "trimmed fraction and offset", line: `{"time":"2025-03-04T06:06:07+01:00"}`,
			want: Event{Time: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)}},
		{name: "trailing newline", line: "{\"event\":\"dns\"}\r\n", want: Event{Event: EventDNS}},
		{name: "null", line: `null`, wantErr: true},
		{name: "array", line: `[]`, wantErr: true},
		{name: "truncated", line: `{"event":"clo`, wantErr: true},
		{name: "bad time", line: `{"time":"yesterday"}`, wantErr: true},
		{name: "wrong type", line: `{"port":"443"}`, wantErr: true},
		{name: "huge duration", line: `{"duration_ms":1e300}`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine([]byte(tc.line))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadAll(t *testing.T) {
	var b []byte
	for _, tc := range encodingCases {
		b = append(tc.e.AppendJSON(b), '\n')
	}
	b = append(b, "\n  \n"...)                                                // blank lines are skipped
	events, err := ReadAll(strings.NewReader(string(b) + `{"event":"exit"}`)) // no final newline
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != len(encodingCases)+1 {
		t.Fatalf("got %d events, want %d", len(events), len(encodingCases)+1)
	}
	for i, tc := range encodingCases {
		if !reflect.DeepEqual(events[i], tc.e) {
			t.Errorf("event %d: got %+v, want %+v", i, events[i], tc.e)
		}
	}

	events, err = ReadAll(strings.NewReader("{\"event\":\"start\"}\n{\"event\":\"con"))
	if err == nil || !strings.Contains(err.Error(), "line 2") || len(events) != 1 {
		t.Errorf("cut-short log: events %d, err %v; want 1 event and a line 2 error", len(events), err)
	}
}

// TestWireTagsMatchFieldConstants keeps the decoder's struct tags and the
// Field* constants the encoder uses in step.
func TestWireTagsMatchFieldConstants(t *testing.T) {
	typ := reflect.TypeFor[wireEvent]()
	var tags []string
	for i := range typ.NumField() {
		tags = append(tags, typ.Field(i).Tag.Get("json"))
	}
	if !slices.Equal(tags, allFields) {
		t.Errorf("wireEvent tags\n%v\nwant\n%v", tags, allFields)
	}
	// And the encoder writes keys in that same order.
	e := Event{Time: t0, Sandbox: "s", Event: "x", Conn: 1, Decision: "d", Reason: "r",
		Rule: "r", Proto: "p", Method: "m", Host: "h", Port: 1, Path: "/", Upgrade: "u",
		Status: 1, Dst: "d", OverflowBytes: 1, BytesUp: 1, BytesDown: 1, Duration: time.Millisecond,
		PID: 1, Exe: "e", Command: []string{"c"}, PolicySHA256: "p", ExitCode: 1, Name: "n", QType: "q"}
	line, _ := e.MarshalJSON()
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.Token() // {
	var keys []string
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	if !slices.Equal(keys, allFields) {
		t.Errorf("encoded keys\n%v\nwant\n%v", keys, allFields)
	}
}

func FuzzEncodeParse(f *testing.F) {
	for _, tc := range encodingCases {
		f.Add(tc.e.Event, tc.e.Host, tc.e.Path, tc.e.Method, int64(tc.e.Port), int64(tc.e.Duration))
	}
	f.Add(EventRequest, "\x00\xff\u2028", "/a?b#c", `"\`, int64(-1), int64(-1))
	f.Fuzz(func(t *testing.T, kind, host, path, method string, port, dur int64) {
		e := Event{Time: t0, Event: kind, Host: host, Path: path, Method: method,
			Port: int(port), Duration: time.Duration(dur), Decision: DecisionDeny, Upgrade: method}
		if d, _ := e.DenialLine(); strings.ContainsFunc(d, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("control character in denial line %q", d)
		}
		line, _ := e.MarshalJSON()
		if !json.Valid(line) {
			t.Fatalf("invalid JSON: %q", line)
		}
		got, err := ParseLine(line)
		if err != nil {
			t.Fatalf("ParseLine(%q): %v", line, err)
		}
		want := e
		want.Path = StripQuery(path)
		want.Duration = time.Duration(e.Duration.Milliseconds()) * time.Millisecond
		if kind == EventStart {
			want.Command = []string{} // start always carries command
		}
		valid := utf8.ValidString(kind) && utf8.ValidString(host) &&
			utf8.ValidString(path) && utf8.ValidString(method)
		if valid && !reflect.DeepEqual(got, want) {
			t.Errorf("round trip\n got %+v\nwant %+v", got, want)
		}
	})
}
