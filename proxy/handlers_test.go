package proxy

import (
	"testing"
	"time"
)

// TestHandlerCountWait: wait returns when the last handler ends, not at its
// deadline, and reports what still runs when the deadline comes first.
func TestHandlerCountWait(t *testing.T) {
	var h handlerCount
	if n := h.wait(time.Hour); n != 0 {
		t.Fatalf("nothing running: wait = %d", n)
	}
	h.add()
	h.add()
	if n := h.wait(time.Millisecond); n != 2 {
		t.Fatalf("deadline passed: wait = %d, want 2", n)
	}
	h.done()
	if n := h.wait(0); n != 1 {
		t.Fatalf("one ended: wait = %d, want 1", n)
	}
	got := make(chan int)
	go func() { got <- h.wait(time.Hour) }()
	h.done()
	select {
	case n := <-got:
		if n != 0 {
			t.Fatalf("wait = %d after the last handler ended", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return when the last handler ended")
	}
}
