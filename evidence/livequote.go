package evidence

import (
	"errors"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// liveQuotes bounds the quotes made on request with a client's nonce: each
// costs the guest agent real work, so a token bucket limits them all, and a
// smaller one per client (by source address) sits under it, so that one
// client asking in a loop cannot keep every other verifier at 429. Each
// quote has a deadline.
type liveQuotes struct {
	limiter *rate.Limiter
	clients *clientBudgets
	timeout time.Duration
}

// newLiveQuotes applies the defaults documented on HandlerConfig and
// AttestationConfig: 2 per second, bursts of 4, 10 s per quote; each client
// a quarter of the rate and half the burst.
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
	return liveQuotes{
		limiter: rate.NewLimiter(r, burst),
		clients: &clientBudgets{rate: r / 4, burst: max(burst/2, 1), m: map[string]*rate.Limiter{}},
		timeout: timeout,
	}, nil
}

// admit takes a token from the client's budget, then from the shared one,
// or answers 429 with Retry-After and reports false. remoteAddr is the
// request's RemoteAddr.
func (l liveQuotes) admit(w http.ResponseWriter, remoteAddr, what string) bool {
	own := l.clients.reserve(clientKey(remoteAddr))
	if d := own.Delay(); d > 0 {
		own.Cancel()
		tooMany(w, d, "too many "+what+" from your address; retry later")
		return false
	}
	res := l.limiter.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel()
		own.Cancel()
		tooMany(w, d, "too many "+what+"; retry later")
		return false
	}
	return true
}

func tooMany(w http.ResponseWriter, d time.Duration, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
	http.Error(w, msg, http.StatusTooManyRequests)
}

// maxClients bounds the per-client table. When it is full, clients whose
// bucket is full again (they have been quiet) are forgotten: their state is
// that of a new client. If every one is busy, newcomers share one bucket.
const maxClients = 4096

type clientBudgets struct {
	rate  rate.Limit
	burst int

	mu       sync.Mutex
	m        map[string]*rate.Limiter
	overflow *rate.Limiter
}

func (c *clientBudgets) reserve(key string) *rate.Reservation {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.m[key]
	if l == nil {
		if len(c.m) >= maxClients {
			c.forgetQuiet()
		}
		if len(c.m) >= maxClients {
			if c.overflow == nil {
				c.overflow = rate.NewLimiter(c.rate, c.burst)
			}
			return c.overflow.Reserve()
		}
		l = rate.NewLimiter(c.rate, c.burst)
		c.m[key] = l
	}
	return l.Reserve()
}

func (c *clientBudgets) forgetQuiet() {
	now := time.Now()
	for k, l := range c.m {
		if l.TokensAt(now) >= float64(c.burst) {
			delete(c.m, k)
		}
	}
}

// clientKey is the address a budget belongs to: the IP of host:port, with
// IPv6 addresses cut to their /64 (one host usually holds a whole /64).
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
