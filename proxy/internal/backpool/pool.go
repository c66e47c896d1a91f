// Package backpool keeps the idle backend connections of http mode's
// HTTP/1.1 fast path, per backend address, most recently used first. A
// connection is handed out again only if the backend has sent nothing and not
// closed it while it was idle (rawio.IdleCheck), so bytes a backend sent after
// a complete response never reach the next client as its answer. A sweep
// closes connections idle for longer than IdleTimeout.
package backpool

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy/internal/rawio"
)

const (
	// IdleTimeout and MaxIdlePerBackend bound the pool, as net/http's
	// Transport's IdleConnTimeout and MaxIdleConnsPerHost do.
	IdleTimeout       = 90 * time.Second
	MaxIdlePerBackend = 256
)

// Conn is a backend connection with its pool bookkeeping.
type Conn struct {
	net.Conn
	addr      string
	idleSince time.Time
	idle      *rawio.IdleCheck
}

// Pool is safe for use by several goroutines. The zero value is not usable:
// Dial must be set.
type Pool struct {
	// Dial opens a new connection to a backend address.
	Dial func(ctx context.Context, addr string) (net.Conn, error)

	mu     sync.Mutex
	idle   map[string][]*Conn
	n      int
	sweep  *time.Timer
	closed bool
}

// Get returns an idle connection to addr that is still silent, or a new one;
// reused says which (a reused one may still have been closed by the backend
// an instant ago: the caller retries once on a new one).
func (p *Pool) Get(ctx context.Context, addr string) (c *Conn, reused bool, err error) {
	p.mu.Lock()
	for l := p.idle[addr]; len(l) > 0; l = p.idle[addr] {
		bc := l[len(l)-1]
		p.idle[addr] = l[:len(l)-1]
		p.n--
		if time.Since(bc.idleSince) >= IdleTimeout {
			bc.Close()
			continue
		}
		p.mu.Unlock()
		if bc.idle.Silent() {
			return bc, true, nil
		}
		// The backend sent bytes or closed while the connection was idle:
		// whatever it sent belongs to no request of ours.
		bc.Close()
		p.mu.Lock()
	}
	p.mu.Unlock()
	nc, err := p.Dial(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	return &Conn{Conn: nc, addr: addr, idle: rawio.NewIdleCheck(nc)}, false, nil
}

// Put returns a connection whose last response ended cleanly; it is closed
// instead when the pool is closed or full for its address.
func (p *Pool) Put(bc *Conn) {
	bc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[bc.addr]) >= MaxIdlePerBackend {
		p.mu.Unlock()
		bc.Close()
		return
	}
	if p.idle == nil {
		p.idle = make(map[string][]*Conn)
	}
	p.idle[bc.addr] = append(p.idle[bc.addr], bc)
	p.n++
	if p.sweep == nil {
		p.sweep = time.AfterFunc(IdleTimeout, p.sweepIdle)
	}
	p.mu.Unlock()
}

// Idle is how many connections the pool holds.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// sweepIdle runs on the timer's goroutine.
func (p *Pool) sweepIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweep = nil
	if p.closed {
		return
	}
	for addr, l := range p.idle {
		// Oldest first: stop at the first one still fresh.
		i := 0
		for ; i < len(l) && time.Since(l[i].idleSince) >= IdleTimeout; i++ {
			l[i].Close()
		}
		p.n -= i
		p.idle[addr] = append(l[:0], l[i:]...)
	}
	if p.n > 0 {
		p.sweep = time.AfterFunc(IdleTimeout/2, p.sweepIdle)
	}
}

// Close closes every idle connection; later Puts close theirs.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	for addr, l := range p.idle {
		for _, bc := range l {
			bc.Close()
		}
		delete(p.idle, addr)
	}
	p.n = 0
}
