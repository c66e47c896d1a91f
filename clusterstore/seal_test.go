package clusterstore

import (
	"bytes"
	"testing"
)

func TestSealRoundTrip(t *testing.T) {
	s, err := newSealer(key(7))
	if err != nil {
		t.Fatal(err)
	}
	v := s.seal("/p/k", 42, []byte("hello"))
	gen, plain, err := s.open("/p/k", v)
	if err != nil || gen != 42 || string(plain) != "hello" {
		t.Fatalf("open = %d %q %v", gen, plain, err)
	}
	v[5] ^= 1 // the generation is authenticated
	if _, _, err := s.open("/p/k", v); err == nil {
		t.Fatal("a changed generation opened")
	}
}

// FuzzOpen: bytes from the store never panic the opener, and nothing but
// a value sealed by us opens.
func FuzzOpen(f *testing.F) {
	s, _ := newSealer(key(7))
	f.Add(s.seal("/p/k", 1, []byte("x")))
	f.Add([]byte("TIS1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, plain, err := s.open("/p/k", b)
		if err == nil && !bytes.Equal(plain, []byte("x")) {
			t.Fatalf("forged value opened: %q", plain)
		}
	})
}
