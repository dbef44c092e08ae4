package policies

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// TestSchemaAgreesWithParser validates every example policy (the README's
// and testdata/examples) against both the JSON Schema and the parser: they
// must agree, except on the parser-only files, which the schema cannot
// reject by design (the parser catches them).
func TestSchemaAgreesWithParser(t *testing.T) {
	schema := loadSchema(t)
	type example struct {
		name  string
		data  []byte
		valid bool // what the parser must say
		gap   bool // the schema accepts what the parser rejects
	}
	var examples []example
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```yaml blocks: where did the policy example go?")
	}
	isPolicy := regexp.MustCompile(`(?m)^version:`)
	for i, b := range blocks {
		if isPolicy.Match(b[1]) { // other YAML (a CI snippet, say) is not a policy
			examples = append(examples, example{name: fmt.Sprintf("README.md yaml block %d", i+1), data: b[1], valid: true})
		}
	}
	for _, dir := range []string{"valid", "invalid", "parser-only"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "examples", dir, "*.yaml"))
		if len(files) == 0 {
			t.Fatalf("no examples in testdata/examples/%s", dir)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			examples = append(examples, example{name: f, data: data, valid: dir == "valid", gap: dir == "parser-only"})
		}
	}
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			_, perr := Parse(ex.data, ex.name)
			if (perr == nil) != ex.valid {
				t.Errorf("parser: %v, want valid=%v", perr, ex.valid)
			}
			var doc any
			if err := yaml.Unmarshal(ex.data, &doc); err != nil {
				t.Fatalf("yaml: %v", err)
			}
			errs := schema.validate(schema.root, jsonValue(t, doc), "$")
			schemaOK := len(errs) == 0
			switch {
			case ex.gap && !schemaOK:
				t.Errorf("the schema now rejects this parser-only example (%v): move it to invalid/", errs)
			case !ex.gap && schemaOK != ex.valid:
				t.Errorf("schema says valid=%v (%v), parser says valid=%v (%v)", schemaOK, errs, perr == nil, perr)
			}
		})
	}
}

// TestSchemaKeywords: the schema uses only keywords the test's validator
// implements, so that none is silently ignored here.
func TestSchemaKeywords(t *testing.T) {
	schema := loadSchema(t)
	if schema.root["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema %v, want draft 2020-12", schema.root["$schema"])
	}
	var walk func(s map[string]any, path string)
	walk = func(s map[string]any, path string) {
		for k, v := range s {
			if !knownKeywords[k] {
				t.Errorf("%s: keyword %q is not checked by this test's validator", path, k)
			}
			switch k {
			case "properties", "$defs":
				for name, sub := range v.(map[string]any) {
					walk(sub.(map[string]any), path+"/"+k+"/"+name)
				}
			case "items":
				walk(v.(map[string]any), path+"/items")
			case "anyOf":
				for i, sub := range v.([]any) {
					walk(sub.(map[string]any), fmt.Sprintf("%s/anyOf/%d", path, i))
				}
			}
		}
	}
	walk(schema.root, "#")
}

var knownKeywords = map[string]bool{
	"$schema": true, "$id": true, "$defs": true, "$ref": true, "title": true, "description": true,
	"type": true, "const": true, "required": true, "properties": true, "additionalProperties": true,
	"items": true, "minItems": true, "minimum": true, "maximum": true, "maxLength": true,
	"pattern": true, "anyOf": true,
}

// jsonSchema is a validator for the subset of JSON Schema the policy
// schema uses (see knownKeywords): enough to test the schema, no more.
type jsonSchemaValidator struct {
	root map[string]any
}

func loadSchema(t *testing.T) *jsonSchemaValidator {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal(JSONSchema(), &root); err != nil {
		t.Fatalf("JSONSchema() is not JSON: %v", err)
	}
	return &jsonSchemaValidator{root: root}
}

// jsonValue turns a YAML document into what a JSON decoder would give.
func jsonValue(t *testing.T, doc any) any {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("policy as JSON: %v", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *jsonSchemaValidator) validate(s map[string]any, x any, path string) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/$defs/")
		def, ok := v.root["$defs"].(map[string]any)[name].(map[string]any)
		if !ok {
			fail("unresolvable $ref %s", ref)
			return errs
		}
		errs = append(errs, v.validate(def, x, path)...)
	}
	if ty, ok := s["type"]; ok && !hasType(ty, x) {
		fail("type %v, want %v", jsonType(x), ty)
		return errs
	}
	if c, ok := s["const"]; ok && fmt.Sprint(c) != fmt.Sprint(x) {
		fail("%v, want %v", x, c)
	}
	if any_, ok := s["anyOf"].([]any); ok {
		matched := false
		for _, sub := range any_ {
			if len(v.validate(sub.(map[string]any), x, path)) == 0 {
				matched = true
				break
			}
		}
		if !matched {
			fail("%v matches none of anyOf", x)
		}
	}
	switch x := x.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asList(s["required"]) {
			if _, ok := x[r.(string)]; !ok {
				fail("missing required %q", r)
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sub, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					fail("unknown property %q", k)
				}
				continue
			}
			errs = append(errs, v.validate(sub, x[k], path+"."+k)...)
		}
	case []any:
		if n, ok := s["minItems"].(float64); ok && float64(len(x)) < n {
			fail("%d items, want at least %v", len(x), n)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, it := range x {
				errs = append(errs, v.validate(items, it, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case string:
		if n, ok := s["maxLength"].(float64); ok && float64(utf8.RuneCountInString(x)) > n {
			fail("longer than %v", n)
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(x) {
			fail("%q does not match %s", x, p)
		}
	case float64:
		if n, ok := s["minimum"].(float64); ok && x < n {
			fail("%v < minimum %v", x, n)
		}
		if n, ok := s["maximum"].(float64); ok && x > n {
			fail("%v > maximum %v", x, n)
		}
	}
	return errs
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func hasType(ty any, x any) bool {
	types := []any{ty}
	if l, ok := ty.([]any); ok {
		types = l
	}
	for _, t := range types {
		if t == jsonType(x) || (t == "number" && jsonType(x) == "integer") {
			return true
		}
	}
	return false
}

func jsonType(x any) string {
	switch x := x.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}
