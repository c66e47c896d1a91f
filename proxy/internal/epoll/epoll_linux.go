//go:build linux

package epoll

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Watcher waits for sockets to become readable on behalf of connections that
// have no goroutine, so that an idle tcp-mode connection costs no goroutine
// stack: one epoll instance, itself waited for through the runtime's poller by
// a single goroutine, fires a callback once per registration (EPOLLONESHOT).
type Watcher struct {
	epfd int
	file *os.File
	done chan struct{}

	mu    sync.Mutex
	next  uint64
	waits map[uint64]func()
}

// New starts a watcher and its one goroutine; Close stops it.
func New() (*Watcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll instance: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("creating epoll instance: %w", err)
	}
	w := &Watcher{
		epfd:  epfd,
		file:  os.NewFile(uintptr(epfd), "proxy-epoll"),
		done:  make(chan struct{}),
		next:  1,
		waits: make(map[uint64]func()),
	}
	rc, err := w.file.SyscallConn()
	if err != nil {
		w.file.Close()
		return nil, fmt.Errorf("polling epoll instance: %w", err)
	}
	go w.run(rc)
	return w, nil
}

func (w *Watcher) run(rc syscall.RawConn) {
	defer close(w.done)
	events := make([]syscall.EpollEvent, 128)
	rc.Read(func(uintptr) bool {
		for {
			n, err := syscall.EpollWait(w.epfd, events, 0)
			if err == syscall.EINTR {
				continue
			}
			if n <= 0 {
				return false // wait until the epoll instance has events
			}
			for i := range events[:n] {
				id := *(*uint64)(unsafe.Pointer(&events[i].Fd))
				w.mu.Lock()
				fire := w.waits[id]
				delete(w.waits, id)
				w.mu.Unlock()
				if fire != nil {
					fire()
				}
			}
			if n < len(events) {
				return false
			}
		}
	})
}

// Add calls fire once, from the watcher's goroutine, when the socket behind rc
// becomes readable, reaches end of stream or fails. fire must not block. Each
// socket may be added once.
func (w *Watcher) Add(rc syscall.RawConn, fire func()) (uint64, error) {
	w.mu.Lock()
	id := w.next
	w.next++
	w.waits[id] = fire
	w.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = id
	var cerr error
	err := rc.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		w.Cancel(id)
		return 0, err
	}
	return id, nil
}

// Cancel forgets a registration; it reports false when the callback has
// already been taken to run. The kernel side goes away with the socket.
func (w *Watcher) Cancel(id uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.waits[id]
	delete(w.waits, id)
	return ok
}

// Close stops the watcher's goroutine and waits for it.
func (w *Watcher) Close() {
	w.file.Close()
	<-w.done
}
