package evidence

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"
)

// liveQuotes bounds the quotes made on request with a client's nonce: each
// costs the guest agent real work, so a token bucket limits them, and each
// has a deadline.
type liveQuotes struct {
	limiter *rate.Limiter
	timeout time.Duration
}

// newLiveQuotes applies the defaults documented on HandlerConfig and
// AttestationConfig: 2 per second, bursts of 4, 10 s per quote.
func newLiveQuotes(r rate.Limit, burst int, timeout time.Duration) (liveQuotes, error) {
	if r < 0 || burst < 0 || timeout < 0 {
		return liveQuotes{}, errors.New("live quote rate, burst and timeout must not be negative")
	}
	if r == 0 {
		r = 2
	}
	if burst == 0 {
		burst = 4
	}
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	return liveQuotes{limiter: rate.NewLimiter(r, burst), timeout: timeout}, nil
}

// admit takes a token, or answers 429 with Retry-After and reports false.
func (l liveQuotes) admit(w http.ResponseWriter, what string) bool {
	res := l.limiter.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
		http.Error(w, "too many "+what+"; retry later", http.StatusTooManyRequests)
		return false
	}
	return true
}
