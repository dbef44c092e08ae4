package policies

import _ "embed"

//go:embed policy.schema.json
var jsonSchema []byte

// JSONSchema returns the JSON Schema (draft 2020-12) of a version 1 policy
// file, for editors and CI linters: `osandbox policy schema` prints it. It
// describes the shape; the parser stays the authority and also rejects what
// a schema cannot see (duplicate rule names, a CIDR with bits set past its
// prefix, a port written in octal). TestSchemaAgreesWithParser keeps the
// two in step. The caller must not modify the returned slice.
func JSONSchema() []byte { return jsonSchema }
