package audit

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/export")

// testProduct pins metadata.product.version, so golden files do not change
// with the build.
var testProduct = Product{Name: "osandbox", Vendor: "osandbox", Version: "v0.0.0-test"}

// TestExportGolden exports testdata/export/run.jsonl in every format, with
// and without a decision filter, and compares with the golden files.
func TestExportGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "export", "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		golden   string
		format   Format
		decision string
	}{
		{"run.jsonl.golden", FormatJSONL, ""},
		{"run.json.golden", FormatJSON, ""},
		{"run.csv.golden", FormatCSV, ""},
		{"run.ocsf.golden", FormatOCSF, ""},
		{"deny.jsonl.golden", FormatJSONL, DecisionDeny},
		{"allow_upgrade.ocsf.golden", FormatOCSF, DecisionAllowUpgrade},
	}
	for _, c := range cases {
		t.Run(c.golden, func(t *testing.T) {
			var out bytes.Buffer
			err := Export(&out, bytes.NewReader(in), ExportOptions{Format: c.format, Decision: c.decision, Product: testProduct})
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.golden, out.Bytes())
		})
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "export", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./audit/ -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

// TestExportFormatsDecode: each format decodes as what it claims to be and
// holds one record per kept event.
func TestExportFormatsDecode(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "export", "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	events, err := ReadAll(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	export := func(f Format, decision string) []byte {
		var out bytes.Buffer
		if err := Export(&out, bytes.NewReader(in), ExportOptions{Format: f, Decision: decision}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}

	again, err := ReadAll(bytes.NewReader(export(FormatJSONL, "")))
	if err != nil || len(again) != len(events) {
		t.Fatalf("jsonl: %d events (%v), want %d", len(again), err, len(events))
	}
	for i := range events {
		if a, b := string(events[i].AppendJSON(nil)), string(again[i].AppendJSON(nil)); a != b {
			t.Errorf("jsonl event %d changed:\n%s\n%s", i, a, b)
		}
	}

	var arr []map[string]any
	if err := json.Unmarshal(export(FormatJSON, ""), &arr); err != nil || len(arr) != len(events) {
		t.Fatalf("json: %d objects (%v), want %d", len(arr), err, len(events))
	}
	if err := json.Unmarshal(export(FormatJSON, DecisionAllowUpgrade), &arr); err != nil || len(arr) != 1 {
		t.Errorf("json filtered to allow_upgrade: %d objects (%v), want 1", len(arr), err)
	}

	rows, err := csv.NewReader(bytes.NewReader(export(FormatCSV, ""))).ReadAll()
	if err != nil || len(rows) != len(events)+1 {
		t.Fatalf("csv: %d rows (%v), want %d", len(rows), err, len(events)+1)
	}
	if strings.Join(rows[0], ",") != strings.Join(allFields, ",") {
		t.Errorf("csv header %q, want %q", rows[0], allFields)
	}

	var denied int
	for _, e := range events {
		if e.Decision == DecisionDeny {
			denied++
		}
	}
	lines := strings.Split(strings.TrimSpace(string(export(FormatJSONL, DecisionDeny))), "\n")
	if len(lines) != denied {
		t.Errorf("jsonl --decision deny: %d lines, want %d", len(lines), denied)
	}
}

// TestCSVRecord: a cell is empty exactly when the JSON line omits the
// field, and a cell a spreadsheet would evaluate is defused.
func TestCSVRecord(t *testing.T) {
	cases := []struct {
		name string
		e    Event
		want map[string]string // column -> cell; unlisted columns must be empty
	}{
		{
			name: "exit code zero is written",
			e:    Event{Time: t0, Sandbox: "s", Event: EventExit},
			want: map[string]string{FieldTime: "2025-03-04T05:06:07.000000890Z", FieldSandbox: "s", FieldEvent: "exit", FieldExitCode: "0"},
		},
		{
			name: "close writes zero byte counts",
			e:    Event{Time: t0, Sandbox: "s", Event: EventClose, Conn: 9},
			want: map[string]string{FieldTime: "2025-03-04T05:06:07.000000890Z", FieldSandbox: "s", FieldEvent: "close",
				FieldConn: "9", FieldBytesUp: "0", FieldBytesDown: "0", FieldDurationMS: "0"},
		},
		{
			name: "formula in host and path",
			e: Event{Time: t0, Sandbox: "s", Event: EventRequest, Decision: DecisionDeny, Reason: "no_matching_rule",
				Proto: ProtoHTTP, Method: "GET", Host: "=1+1", Port: 80, Path: "/@x?token=1"},
			want: map[string]string{FieldTime: "2025-03-04T05:06:07.000000890Z", FieldSandbox: "s", FieldEvent: "request",
				FieldDecision: "deny", FieldReason: "no_matching_rule", FieldProto: "http", FieldMethod: "GET",
				FieldHost: "'=1+1", FieldPort: "80", FieldPath: "/@x"},
		},
		{
			name: "start command as JSON",
			e:    Event{Time: t0, Sandbox: "s", Event: EventStart, Command: []string{"-c", `a "b"`}},
			want: map[string]string{FieldTime: "2025-03-04T05:06:07.000000890Z", FieldSandbox: "s", FieldEvent: "start",
				FieldCommand: `["-c","a \"b\""]`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := csvRecord(c.e)
			for i, col := range CSVHeader() {
				if rec[i] != c.want[col] {
					t.Errorf("column %s = %q, want %q", col, rec[i], c.want[col])
				}
			}
		})
	}
}

// TestScanBadLine: export stops at a line that does not decode, names it,
// and still closes a JSON array.
func TestScanBadLine(t *testing.T) {
	in := `{"time":"2025-03-04T05:06:07Z","sandbox":"s","event":"exit","exit_code":1}` + "\n{not json\n"
	var out bytes.Buffer
	err := Export(&out, strings.NewReader(in), ExportOptions{Format: FormatJSON})
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v, want one naming line 2", err)
	}
	var arr []any
	if jerr := json.Unmarshal(out.Bytes(), &arr); jerr != nil || len(arr) != 1 {
		t.Errorf("output %q: %v, want an array of 1", out.String(), jerr)
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range Formats {
		if got, err := ParseFormat(string(f)); err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %q, %v", f, got, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("ParseFormat(xml) succeeded")
	}
	if _, err := NewExporter(&bytes.Buffer{}, ExportOptions{Decision: "maybe"}); err == nil {
		t.Error("NewExporter accepted decision \"maybe\"")
	}
}
