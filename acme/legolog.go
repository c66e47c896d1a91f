package acme

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	legolog "github.com/go-acme/lego/v4/log"
)

// RouteLegoLogs sends lego's package-wide log output to l (nil discards it).
// lego logs through a global, so only main should call this, once.
func RouteLegoLogs(l *slog.Logger) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	legolog.Logger = legoLogger{l.With("component", "lego")}
}

// legoLogger adapts lego's StdLogger to slog. lego prefixes levels as
// "[INFO] ", "[WARN] "; they become slog levels.
type legoLogger struct{ l *slog.Logger }

func (g legoLogger) log(msg string) {
	msg = strings.TrimSpace(msg)
	level := slog.LevelInfo
	for prefix, lv := range map[string]slog.Level{"[INFO] ": slog.LevelDebug, "[WARN] ": slog.LevelWarn} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			msg, level = rest, lv
		}
	}
	g.l.Log(context.Background(), level, msg)
}

func (g legoLogger) Print(args ...any)                 { g.log(fmt.Sprint(args...)) }
func (g legoLogger) Println(args ...any)               { g.log(fmt.Sprintln(args...)) }
func (g legoLogger) Printf(format string, args ...any) { g.log(fmt.Sprintf(format, args...)) }
func (g legoLogger) Fatal(args ...any)                 { g.log(fmt.Sprint(args...)); os.Exit(1) }
func (g legoLogger) Fatalln(args ...any)               { g.log(fmt.Sprintln(args...)); os.Exit(1) }
func (g legoLogger) Fatalf(format string, args ...any) {
	g.log(fmt.Sprintf(format, args...))
	os.Exit(1)
}
