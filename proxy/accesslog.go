package proxy

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// logAccess writes the access log line of one HTTP request (Config.AccessLog),
// the same for the fast path and net/http. Status 0: no response was sent.
func (s *Server) logAccess(method, host, path string, status int, bytes int64, took time.Duration, backend, client string) {
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("method", method), slog.String("host", host), slog.String("path", path),
		slog.Int("status", status), slog.Int64("bytes", bytes), slog.Duration("duration", took),
		slog.String("backend", backend), slog.String("client", client))
}

// accessWriter records what net/http's path sent, for the access log.
type accessWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (a *accessWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

func (a *accessWriter) WriteHeader(code int) {
	if a.status == 0 && code >= 200 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *accessWriter) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	n, err := a.ResponseWriter.Write(p)
	a.bytes += int64(n)
	return n, err
}

// Hijack is a protocol switch: ReverseProxy writes the 101 on the hijacked
// connection itself.
func (a *accessWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(a.ResponseWriter).Hijack()
	if err == nil && a.status == 0 {
		a.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// clientHost is the address part of a RemoteAddr.
func clientHost(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}
