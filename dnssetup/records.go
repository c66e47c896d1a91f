package dnssetup

import (
	"fmt"
	"strings"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// Record is one record the operator creates, in dstack-ingress's JSON
// form (the webhook and the records endpoint carry it).
type Record = evidence.WebhookRecord

// Render is the block printed for the operator.
func Render(records []Record, title string) string {
	var b strings.Builder
	line := strings.Repeat("=", 74)
	fmt.Fprintf(&b, "\n%s\n  DNS records required for %s\n%s\n", line, title, line)
	b.WriteString("  This ingress holds no DNS credential: create these records yourself.\n\n")
	for _, r := range records {
		fmt.Fprintf(&b, "  %-6s %s\n  %-6s -> %s\n", r.Type, r.Name, "", r.Value)
		if r.Note != "" {
			fmt.Fprintf(&b, "  %-6s    (%s)\n", "", r.Note)
		}
		b.WriteString("\n")
	}
	b.WriteString(line + "\n")
	return b.String()
}
