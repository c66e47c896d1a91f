// Package fielderr is the error a library package returns for a bad
// configuration value: which field, the value, and what is accepted. The
// library names its own Go field; only cmd/ingress knows the flag and the
// environment variable an operator set, and renames the field for them
// (Error.As), so no library names the daemon's settings.
package fielderr

import (
	"errors"
	"strconv"
)

// Error is a bad configuration value.
type Error struct {
	// Field names the setting: the Go field ("Routes", "TXTPrefix") in the
	// library, the flag or variable once cmd/ingress renamed it.
	Field string
	// Value is the value given, or "" when the problem is its absence.
	Value string
	// Problem says what is wrong; Accepted what would be accepted.
	Problem, Accepted string
	// Err is the underlying error, if any (errors.Is sees through).
	Err error
}

func (e *Error) Error() string {
	msg := e.Field
	if e.Value != "" {
		msg += "=" + strconv.Quote(e.Value)
	}
	switch {
	case e.Problem != "":
		msg += ": " + e.Problem
	case e.Err == nil:
		msg += " is not valid"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Accepted != "" {
		msg += " (want " + e.Accepted + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Rename returns the *Error inside err with its field renamed by names
// (library field to what the operator set), or err unchanged when it holds
// no *Error or its field has no new name. The wrapping around the *Error is
// dropped: the renamed field says where the problem is.
func Rename(err error, names map[string]string) error {
	var fe *Error
	if !errors.As(err, &fe) {
		return err
	}
	name, ok := names[fe.Field]
	if !ok {
		return err
	}
	out := *fe
	out.Field = name
	return &out
}
