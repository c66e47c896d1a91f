package fielderr

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestError(t *testing.T) {
	for _, c := range []struct {
		e    Error
		want string
	}{
		{Error{Field: "Port"}, "Port is not valid"},
		{Error{Field: "Port", Value: "0", Accepted: "1 to 65535"}, `Port="0" is not valid (want 1 to 65535)`},
		{Error{Field: "Zone", Value: "a..b", Err: io.EOF}, `Zone="a..b": EOF`},
		{Error{Field: "ALPN", Value: "x", Problem: "reserved", Accepted: "h2"}, `ALPN="x": reserved (want h2)`},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.e, got, c.want)
		}
	}
}

func TestRename(t *testing.T) {
	base := &Error{Field: "TXTPrefix", Value: "a.b", Err: io.EOF}
	wrapped := fmt.Errorf("plan: %w", base)
	got := Rename(wrapped, map[string]string{"TXTPrefix": "TXT_PREFIX"})
	var fe *Error
	if !errors.As(got, &fe) || fe.Field != "TXT_PREFIX" || !errors.Is(got, io.EOF) || got.Error() != `TXT_PREFIX="a.b": EOF` {
		t.Fatalf("renamed: %v", got)
	}
	if base.Field != "TXTPrefix" {
		t.Fatal("Rename changed the original")
	}
	if Rename(wrapped, map[string]string{"Other": "X"}) != wrapped || Rename(io.EOF, nil) != io.EOF {
		t.Fatal("an error without a known field changed")
	}
}
