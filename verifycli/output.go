package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// ANSI colours for the status column, used only on a terminal.
var statusColor = map[string]string{
	report.StatusPass: "\x1b[32m",
	report.StatusFail: "\x1b[1;31m",
	report.StatusWarn: "\x1b[33m",
	report.StatusSkip: "\x1b[2m",
	report.StatusInfo: "\x1b[2m",
}

const colorReset = "\x1b[0m"

// longHex matches hex runs worth shortening in the checklist: longer than
// a SHA-256, so app ids and hashes show whole (the JSON report keeps every
// value whole).
var longHex = regexp.MustCompile(`[0-9a-fA-F]{65,}`)

// shorten abbreviates long hex values to their first 16 and last 8 digits.
func shorten(s string) string {
	return longHex.ReplaceAllStringFunc(s, func(h string) string { return h[:16] + "..." + h[len(h)-8:] })
}

// writeText prints the numbered checklist: per step the status, the check's
// name and what it found; the values compared; for a failure or warning,
// what it means. Then the identity and the verdict.
func writeText(w io.Writer, r *report.Report, color bool) error {
	bw := bufio.NewWriter(w)
	head := fmt.Sprintf("verifycli %s %s", r.Command, r.Target)
	if r.Connect != "" {
		head += " (connecting to " + r.Connect + ")"
	}
	fmt.Fprintln(bw, head)
	width := len(fmt.Sprint(len(r.Checks)))
	indent := strings.Repeat(" ", width+8)
	for _, c := range r.Checks {
		st := strings.ToUpper(c.Status)
		if color {
			st = statusColor[c.Status] + st + colorReset
		}
		fmt.Fprintf(bw, "%*d. %s  %s", width, c.Step, st, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(bw, ": %s", shorten(c.Detail))
		}
		fmt.Fprintln(bw)
		switch {
		case c.Want != "" && c.Want == c.Got:
			fmt.Fprintf(bw, "%svalue  %s\n", indent, shorten(c.Want))
		default:
			if c.Want != "" {
				fmt.Fprintf(bw, "%swant   %s\n", indent, shorten(c.Want))
			}
			if c.Got != "" {
				fmt.Fprintf(bw, "%sgot    %s\n", indent, shorten(c.Got))
			}
		}
		if c.Hint != "" && (c.Status == report.StatusFail || c.Status == report.StatusWarn) {
			fmt.Fprintf(bw, "%shint   %s\n", indent, c.Hint)
		}
	}
	if id := r.Identity; id != nil {
		fmt.Fprintln(bw, "identity (measured in the quote):")
		for _, kv := range [][2]string{{"app-id", id.AppID}, {"compose-hash", id.ComposeHash}, {"instance-id", id.InstanceID},
			{"key-provider", id.KeyProvider}, {"os-image-hash", id.OSImageHash}} {
			if kv[1] != "" {
				fmt.Fprintf(bw, "  %-14s %s\n", kv[0], kv[1])
			}
		}
	}
	if r.AccountURI != "" {
		fmt.Fprintf(bw, "acme account: %s\n", r.AccountURI)
	}
	if r.Layout != "" {
		fmt.Fprintf(bw, "bundle layout: %s\n", r.Layout)
	}
	s := r.Summary
	verdict := strings.ToUpper(r.Result)
	if color {
		verdict = statusColor[r.Result] + verdict + colorReset
	}
	if testRoot(r) && r.Result == report.ResultPass {
		verdict += " under a TEST/simulator root: not a TEE"
	}
	fmt.Fprintf(bw, "result: %s (%d passed, %d failed, %d warnings, %d skipped, %d info", verdict, s.Pass, s.Fail, s.Warn, s.Skip, s.Info)
	if r.Strict && s.Fail == 0 && s.Warn+s.Skip > 0 {
		fmt.Fprint(bw, "; --strict counts warnings and skips as failures")
	}
	if notFresh(r) {
		fmt.Fprint(bw, "; freshness NOT proven: no live quote")
	}
	fmt.Fprintln(bw, ")")
	return bw.Flush()
}

// notFresh: the deployment was asked for a live quote and gave none, so the
// result says nothing of whether the TEE vouches for the bundle now.
func notFresh(r *report.Report) bool {
	for _, c := range r.Checks {
		if c.Name == checkLiveQuote && c.Status != report.StatusPass {
			return true
		}
	}
	return false
}

// testRoot: a quote verified under an extra root (--tdx-root), not Intel's.
func testRoot(r *report.Report) bool {
	for _, c := range r.Checks {
		if strings.HasSuffix(c.Name, evidence.CheckQuoteSignature) && c.Status == report.StatusPass && strings.HasPrefix(c.Got, evidence.GotNonIntelRoot) {
			return true
		}
	}
	return false
}
