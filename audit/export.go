package audit

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Format is an output format of `osandbox audit export`.
type Format string

const (
	// FormatJSONL writes each event as one canonical audit log line, the
	// same encoding a Log writes (fields it does not know are dropped).
	FormatJSONL Format = "jsonl"
	// FormatJSON writes one JSON array of those objects.
	FormatJSON Format = "json"
	// FormatOCSF writes one OCSF event object per line; see Event.OCSF.
	FormatOCSF Format = "ocsf"
	// FormatCSV writes a header row and one row per event; see CSVHeader.
	FormatCSV Format = "csv"
)

// Formats lists every Format, in the order help text shows them.
var Formats = []Format{FormatJSONL, FormatJSON, FormatOCSF, FormatCSV}

// ParseFormat returns the Format named s.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown format %q (want jsonl, json, ocsf or csv)", s)
}

// ExportOptions configures an Exporter. The zero value writes JSON Lines of
// every event.
type ExportOptions struct {
	// Format of the output; "" means FormatJSONL.
	Format Format
	// Decision, if set, keeps only events whose decision field equals it
	// (allow, deny or allow_upgrade): start, close and exit events, which
	// carry no decision, are then dropped. "" keeps every event.
	Decision string
	// Product is what OCSF metadata.product names; zero fields get
	// DefaultProduct's.
	Product Product
}

// Scan reads an audit log line by line and calls fn with each event, so
// that a log larger than memory can be exported. Blank lines are skipped. A
// line that does not decode stops it with an error naming the line number,
// as ReadAll's does; so does an error from fn, returned as is.
func Scan(r io.Reader, fn func(Event) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			e, perr := ParseLine(line)
			if perr != nil {
				return fmt.Errorf("line %d: %w", n, perr)
			}
			if ferr := fn(e); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit: read line %d: %w", n, err)
		}
	}
}

// Export copies the audit log r to w in the form opts asks for. On a line
// that does not decode it still finishes the output (a JSON array is
// closed), so that what was read is usable, and returns the error.
func Export(w io.Writer, r io.Reader, opts ExportOptions) error {
	x, err := NewExporter(w, opts)
	if err != nil {
		return err
	}
	serr := Scan(r, x.Write)
	if cerr := x.Close(); serr == nil {
		serr = cerr
	}
	return serr
}

// Exporter writes events in one export format. Call Close to finish the
// output; an Exporter is not safe for concurrent use.
type Exporter struct {
	opts ExportOptions
	bw   *bufio.Writer
	cw   *csv.Writer // FormatCSV only
	n    int         // events written
	buf  []byte
}

// NewExporter returns an Exporter writing to w.
func NewExporter(w io.Writer, opts ExportOptions) (*Exporter, error) {
	if opts.Format == "" {
		opts.Format = FormatJSONL
	}
	if _, err := ParseFormat(string(opts.Format)); err != nil {
		return nil, err
	}
	switch opts.Decision {
	case "", DecisionAllow, DecisionDeny, DecisionAllowUpgrade:
	default:
		return nil, fmt.Errorf("unknown decision %q (want allow, deny or allow_upgrade)", opts.Decision)
	}
	opts.Product = opts.Product.withDefaults()
	x := &Exporter{opts: opts, bw: bufio.NewWriterSize(w, 64<<10)}
	switch opts.Format {
	case FormatCSV:
		x.cw = csv.NewWriter(x.bw)
		if err := x.cw.Write(CSVHeader()); err != nil {
			return nil, err
		}
	case FormatJSON:
		x.bw.WriteByte('[')
	}
	return x, nil
}

// Write writes e, unless the Decision filter drops it or the format has no
// form for it (OCSF has none for start and exit events).
func (x *Exporter) Write(e Event) error {
	if x.opts.Decision != "" && e.Decision != x.opts.Decision {
		return nil
	}
	switch x.opts.Format {
	case FormatJSONL:
		x.buf = append(e.AppendJSON(x.buf[:0]), '\n')
	case FormatJSON:
		x.buf = x.buf[:0]
		if x.n > 0 {
			x.buf = append(x.buf, ',')
		}
		x.buf = append(x.buf, '\n')
		x.buf = e.AppendJSON(x.buf)
	case FormatOCSF:
		obj, ok := e.OCSF(x.opts.Product)
		if !ok {
			return nil
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("ocsf: %w", err)
		}
		x.buf = append(b, '\n')
	case FormatCSV:
		x.n++
		return x.cw.Write(csvRecord(e))
	}
	x.n++
	_, err := x.bw.Write(x.buf)
	return err
}

// Close finishes the output (the closing bracket of a JSON array) and
// flushes it. It does not close the underlying writer.
func (x *Exporter) Close() error {
	switch x.opts.Format {
	case FormatJSON:
		if x.n > 0 {
			x.bw.WriteByte('\n')
		}
		x.bw.WriteString("]\n")
	case FormatCSV:
		x.cw.Flush()
		if err := x.cw.Error(); err != nil {
			return err
		}
	}
	return x.bw.Flush()
}

// csvColumn is one CSV column: a field, the bit that says whether it is
// written when zero, and its value as text.
type csvColumn struct {
	name   string
	bit    field // 0: always written
	text   func(Event) string
	quoted bool // a value the sandboxed program chose: guard against formulas
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// csvColumns are the audit fields in log order.
var csvColumns = []csvColumn{
	{FieldTime, 0, func(e Event) string { return e.Time.UTC().Format(TimeFormat) }, false},
	{FieldSandbox, 0, func(e Event) string { return e.Sandbox }, true},
	{FieldEvent, 0, func(e Event) string { return e.Event }, true},
	{FieldConn, fConn, func(e Event) string { return strconv.FormatUint(e.Conn, 10) }, false},
	{FieldDecision, fDecision, func(e Event) string { return e.Decision }, true},
	{FieldReason, fReason, func(e Event) string { return e.Reason }, true},
	{FieldRule, fRule, func(e Event) string { return e.Rule }, true},
	{FieldProto, fProto, func(e Event) string { return e.Proto }, true},
	{FieldMethod, fMethod, func(e Event) string { return e.Method }, true},
	{FieldHost, fHost, func(e Event) string { return e.Host }, true},
	{FieldPort, fPort, func(e Event) string { return itoa(int64(e.Port)) }, false},
	{FieldPath, fPath, func(e Event) string { return StripQuery(e.Path) }, true},
	{FieldUpgrade, fUpgrade, func(e Event) string { return e.Upgrade }, true},
	{FieldStatus, fStatus, func(e Event) string { return itoa(int64(e.Status)) }, false},
	{FieldDst, fDst, func(e Event) string { return e.Dst }, true},
	{FieldOverflowBytes, fOverflowBytes, func(e Event) string { return itoa(e.OverflowBytes) }, false},
	{FieldBytesUp, fBytesUp, func(e Event) string { return itoa(e.BytesUp) }, false},
	{FieldBytesDown, fBytesDown, func(e Event) string { return itoa(e.BytesDown) }, false},
	{FieldDurationMS, fDurationMS, func(e Event) string { return itoa(e.Duration.Milliseconds()) }, false},
	{FieldPID, fPID, func(e Event) string { return itoa(int64(e.PID)) }, false},
	{FieldExe, fExe, func(e Event) string { return e.Exe }, true},
	{FieldCommand, fCommand, csvCommand, true},
	{FieldPolicySHA256, fPolicySHA256, func(e Event) string { return e.PolicySHA256 }, true},
	{FieldExitCode, fExitCode, func(e Event) string { return itoa(int64(e.ExitCode)) }, false},
	{FieldName, fName, func(e Event) string { return e.Name }, true},
	{FieldQType, fQType, func(e Event) string { return e.QType }, true},
}

// CSVHeader returns the CSV header row: every audit field name, in the
// order the log writes them.
func CSVHeader() []string {
	h := make([]string, len(csvColumns))
	for i, c := range csvColumns {
		h[i] = c.name
	}
	return h
}

// csvRecord is e as one CSV row. A cell is empty exactly when the JSON line
// would omit the field. The command is a JSON array of strings. A text cell
// that a spreadsheet would run as a formula (it starts with =, +, -, @, tab
// or CR) gets a leading apostrophe: hosts and paths come from the sandboxed
// program, and an audit export must not execute what it records.
func csvRecord(e Event) []string {
	must := always(e.Event)
	rec := make([]string, len(csvColumns))
	for i, c := range csvColumns {
		v := c.text(e)
		zero := v == "" || (!c.quoted && v == "0") || (c.bit == fCommand && len(e.Command) == 0)
		if c.bit != 0 && must&c.bit == 0 && zero {
			continue
		}
		if c.quoted && v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			v = "'" + v
		}
		rec[i] = v
	}
	return rec
}

func csvCommand(e Event) string {
	if e.Command == nil {
		return "[]"
	}
	b, _ := json.Marshal(e.Command)
	return string(b)
}
