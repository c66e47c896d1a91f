package main

import (
	"fmt"
	"slices"
	"strings"
)

const usageHead = `verifycli checks a tee-ingress deployment from outside: its certificate, its
evidence bundle, its TDX quote, its CAA record and the Certificate Transparency logs.

Usage:
  verifycli domain https://DOMAIN [flags]   a custom domain served by tee-ingress (or dstack-ingress)
  verifycli gateway https://gateway.BASE     a dstack gateway (its /.dstack/acme-info)
  verifycli tls https://HOST:PORT           the attested self-signed mode (/attestation)
  verifycli bundle DIR                      an evidence folder on disk (offline)
  verifycli quote FILE                      a GetQuote response, such as quote.json (offline; - for stdin)
  verifycli webhook FILE --token-file F     a DNS webhook request body, as its receiver must (offline; - for stdin)
  verifycli help [COMMAND]                  this text, or one command's

Examples:
  verifycli domain https://app.example.com
  verifycli domain https://app.example.com --app-id 3763bc34552cf3a27ff71ad5f7a90471562a1a2d --compose app-compose.json
  verifycli domain https://app.example.test --connect 127.0.0.1:8443 --ca-file dev-ca.pem \
      --tdx-root sim-root.pem --resolver 127.0.0.1:5353 --ct-url http://127.0.0.1:8080/
  verifycli gateway https://gateway.dstack-prod5.phala.network
  verifycli tls https://203.0.113.7:443 --json
  verifycli bundle /evidences
  verifycli quote quote.json --report-data 1234
  curl -s https://app.example.com/evidences/quote.json | verifycli quote -
`

const usageFoot = `
Exit status: 0 no check failed, 1 a check failed, 2 usage, network or input error.
`

// flagDocs describes every flag, in the order help lists them.
var flagDocs = []struct{ name, arg, help string }{
	{"json", "", "print one JSON report (schema: package verifycli/report) instead of the checklist"},
	{"strict", "", "count warn and skip as failures, and fail when no identity value was compared"},
	{"timeout", "DURATION", "bound each network step (default 30s)"},
	{"deadline", "DURATION", "bound the whole run, however many steps the server makes it take (default 1m)"},
	{"connect", "HOST:PORT", "dial this address instead of the URL's host; TLS SNI and HTTP Host stay the URL's (like curl --resolve), for test servers and a single instance"},
	{"tdx-root", "FILE", "also trust this TDX root CA (PEM), such as the dstack simulator's"},
	{"ca-file", "FILE", "also trust these WebPKI roots (PEM) for the served certificate chain"},
	{"resolver", "HOST:PORT", "DNS server for the CAA lookup (default: the system's)"},
	{"ct-url", "URL", `crt.sh-compatible CT search API (default https://crt.sh/); "off" skips CT`},
	{"caa-issuer", "DOMAIN", "the CA's CAA issuer domain (default: letsencrypt.org for a Let's Encrypt account, else the issuer of the CAA record naming the account)"},
	{"validation-methods", "LIST", "ACME methods the CAA record may allow, comma-separated (default dns-01)"},
	{"app-id", "HEX", "expected app-id (20 bytes, 40 hex characters)"},
	{"compose-hash", "HEX", "expected compose-hash (SHA-256, 64 hex characters)"},
	{"compose", "FILE", "the app's app-compose.json; its SHA-256 must be the compose-hash"},
	{"report-data", "HEX", "quote: the report_data the quote must carry (right-padded with zeros to 64 bytes)"},
	{"token-file", "FILE", "webhook: file holding the DNS_WEBHOOK_TOKEN the HMAC is keyed with (kept off the command line)"},
	{"max-age", "DURATION", "webhook: the oldest payload timestamp accepted (default 10m)"},
	{"collateral", "", "fetch Intel PCS collateral to check TCB status and revocation (network)"},
	{"help", "", "show this help"},
}

// commandDocs is what each command checks and what it is given.
var commandDocs = map[string]struct{ arg, checks string }{
	"domain": {"https://DOMAIN", `TLS to DOMAIN, recording the served chain; /evidences/ fetched over that same pinned
certificate; sha256sum.txt covers every file; the quote binds sha256sum.txt, is signed
under Intel's root (or --tdx-root), is not a debug TD, and its event log replays; a live
quote for a fresh nonce where the server offers one; the served leaf is the bundle's; the
chain is valid for DOMAIN; the CAA record set pins the bundle's ACME account and only
--validation-methods; every unexpired certificate for DOMAIN in CT is in history.json
(matched by serial number, then confirmed by the SHA-256 of its public key). Bundles of
tee-ingress, dstack-ingress 2.x (cert-<domain>.pem only) and the older cert.pem layout.`},
	"gateway": {"https://gateway.BASE", `/.dstack/acme-info (with or without hist_keys, active_cert, base_domain): the account
quote binds SHA-512("acme-account:" || account_uri); each key quote binds
SHA-512("zt-cert:" || public key) and verifies; the served key is a quoted key; CAA and CT
for *.BASE; /.dstack/app-info printed and compared with the quoted identity.`},
	"tls": {"https://HOST:PORT", `TLS to HOST:PORT pinning the self-signed leaf; /attestation?nonce=... over it; the quote
binds SHA-256(leaf) || nonce and verifies.`},
	"bundle": {"DIR", `the checks of domain that need no network, on an evidence folder.`},
	"quote":  {"FILE", `signature, debug TD, event log replay, identity; report_data with --report-data.`},
	"webhook": {"FILE", `a DNS_SETUP_MODE=webhook request (dstack-ingress 2.3's envelope): hmac_sha256 is the
payload's under --token-file; the payload is at most --max-age old; the attestation's
report_data is SHA-256(payload) and its quote verifies (signature, debug TD, event log) with
the payload's app_id, or --app-id, as the quoted app. Check this before creating records.`},
}

// commandNames in the order help lists them.
var commandNames = []string{"domain", "gateway", "tls", "bundle", "quote", "webhook"}

// usage is the global help.
func usage() string {
	var b strings.Builder
	b.WriteString(usageHead)
	b.WriteString("\nFlags (anywhere on the line):\n")
	writeFlags(&b, func(string) bool { return true })
	b.WriteString("\nWhat each command checks:\n")
	for _, c := range commandNames {
		for i, line := range strings.Split(commandDocs[c].checks, "\n") {
			label := ""
			if i == 0 {
				label = c
			}
			fmt.Fprintf(&b, "  %-8s %s\n", label, line)
		}
	}
	b.WriteString(usageFoot)
	return b.String()
}

// commandUsage is one command's help: what it takes, checks and accepts.
func commandUsage(cmd string) string {
	doc := commandDocs[cmd]
	var b strings.Builder
	fmt.Fprintf(&b, "Usage:\n  verifycli %s %s [flags]\n\nChecks:\n", cmd, doc.arg)
	for _, line := range strings.Split(doc.checks, "\n") {
		fmt.Fprintf(&b, "  %s\n", line)
	}
	b.WriteString("\nFlags (anywhere on the line):\n")
	writeFlags(&b, func(name string) bool { return commonFlags[name] || slices.Contains(commands[cmd].flags, name) })
	b.WriteString(usageFoot)
	return b.String()
}

func writeFlags(b *strings.Builder, show func(string) bool) {
	for _, f := range flagDocs {
		if !show(f.name) {
			continue
		}
		left := "--" + f.name
		if f.name == "help" {
			left = "-h, --help"
		}
		if f.arg != "" {
			left += " " + f.arg
		}
		lines := wrapWords(f.help, 72)
		fmt.Fprintf(b, "  %-25s %s\n", left, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(b, "  %-25s %s\n", "", l)
		}
	}
}

func wrapWords(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
