package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"html/template"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// pageData is what the HTML index shows beyond the file list: computed once
// per bundle (parsing certificates and replaying the event log) and kept.
type pageData struct {
	sums     [32]byte
	Identity *Identity // nil when the quote's log does not replay to RTMR3
	Account  string
	Certs    []pageCert
	Files    []IndexEntry
}

type pageCert struct {
	File, Names, Serial, SHA256 string
	NotBefore, NotAfter         string
}

// page is what the index template gets for one request.
type page struct {
	*pageData
	Host string
	Live bool
}

// pageCache holds the pageData of the bundle last shown.
type pageCache struct{ p atomic.Pointer[pageData] }

// get returns the page data of b, computing it when b is new.
func (c *pageCache) get(b *Bundle) *pageData {
	if p := c.p.Load(); p != nil && p.sums == b.SumsDigest() {
		return p
	}
	p := newPageData(b)
	c.p.Store(p)
	return p
}

func newPageData(b *Bundle) *pageData {
	p := &pageData{sums: b.SumsDigest()}
	for _, n := range b.names {
		d := b.digests[n]
		p.Files = append(p.Files, IndexEntry{Name: n, Size: len(b.files[n]), SHA256: hex.EncodeToString(d[:]), URL: Prefix + "/" + url.PathEscape(n)})
		if _, ok := certFileDomain(n); !ok && n != CertFile {
			continue
		}
		chain, err := ParseChainPEM(b.files[n])
		if err != nil || len(chain) == 0 {
			continue
		}
		leaf := chain[0]
		fp := sha256.Sum256(leaf.Raw)
		p.Certs = append(p.Certs, pageCert{File: n, Names: strings.Join(leaf.DNSNames, ", "), Serial: leaf.SerialNumber.Text(16),
			SHA256: hex.EncodeToString(fp[:]), NotBefore: leaf.NotBefore.UTC().Format(time.DateTime), NotAfter: leaf.NotAfter.UTC().Format(time.DateTime)})
	}
	if a, err := ParseAccount(b.files[AccountFile]); err == nil {
		p.Account = a.URI
	}
	p.Identity = replayedIdentity(b.quote)
	return p
}

// replayedIdentity is the app identity the quote's event log states, when
// the log replays to the quote's RTMR3 (the page does not check the quote's
// signature: verifycli does).
func replayedIdentity(q *Quote) *Identity {
	if q == nil {
		return nil
	}
	tq, err := ParseTDQuote(q.Quote)
	if err != nil {
		return nil
	}
	events, err := ParseEventLog(q.EventLog)
	if err != nil {
		return nil
	}
	rtmrs, err := ReplayRTMRs(events)
	if err != nil || rtmrs[3] != tq.RTMRs[3] {
		return nil
	}
	id := ExtractIdentity(events)
	return &id
}

var indexPage = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Evidence for {{.Host}}</title>
<style>body{font-family:sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem}code,td{word-break:break-all}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .4rem;text-align:left;vertical-align:top}</style>
</head>
<body>
<h1>Evidence for {{.Host}}</h1>
<p>This service runs in an Intel TDX confidential VM under dstack. The files below are bound to a TDX quote:
its report_data is SHA-256 of <code>sha256sum.txt</code>, which lists every other file.</p>

<h2 id="identity">App identity</h2>
{{with .Identity}}<table>
<tr><th>app id</th><td><code id="app-id">{{.AppID}}</code></td></tr>
<tr><th>compose hash</th><td><code id="compose-hash">{{.ComposeHash}}</code></td></tr>
<tr><th>instance id</th><td><code id="instance-id">{{.InstanceID}}</code></td></tr>
</table>
<p>As the quote's event log states it (the log replays to the quote's RTMR3); the quote's signature is checked by
<code>verifycli</code>, below.</p>
{{else}}<p id="app-id">The quote's event log does not replay to its RTMR3: no identity is shown.</p>{{end}}

<h2 id="account">ACME account</h2>
<p>{{if .Account}}<code id="account-uri">{{.Account}}</code>: the only account the domain's CAA record should let
issue certificates.{{else}}acme-account.json does not parse.{{end}}</p>

<h2 id="certificates">Certificates</h2>
<table>
<tr><th>file</th><th>names</th><th>valid from</th><th>valid until</th><th>serial</th><th>SHA-256</th></tr>
{{range .Certs}}<tr class="cert"><td>{{.File}}</td><td>{{.Names}}</td><td>{{.NotBefore}} UTC</td><td>{{.NotAfter}} UTC</td><td><code>{{.Serial}}</code></td><td><code>{{.SHA256}}</code></td></tr>
{{end}}</table>

<h2 id="live">Live quote</h2>
<p id="live-status">{{if .Live}}Available: <code>GET /evidences/quote.json?nonce=&lt;64 hex characters&gt;</code> returns a fresh
quote whose report_data is SHA-256(sha256sum.txt) followed by your nonce, so you know the TEE vouches for these files
now.{{else}}Not offered by this server: only the published quote.{{end}}</p>

<h2 id="files">Files</h2>
<table>
<tr><th>file</th><th>size</th><th>sha256</th></tr>
{{range .Files}}<tr class="file"><td><a href="{{.URL}}">{{.Name}}</a></td><td>{{.Size}}</td><td><code>{{.SHA256}}</code></td></tr>
{{end}}</table>

<h2 id="verify">Verify</h2>
<p>Everything at once (the quote's signature to Intel's root, the event log, the served certificate, CAA and the
Certificate Transparency logs):</p>
<pre id="verify-cmd">verifycli domain https://{{.Host}}</pre>
<p>By hand (every file <code>sha256sum.txt</code> lists, then the binding of the quote):</p>
<pre id="hand-check">D={{.Host}}
curl -fsSO "https://$D/evidences/sha256sum.txt" &amp;&amp; curl -fsSO "https://$D/evidences/quote.json"
while read -r sum name; do curl -fsS -o "$name" "https://$D/evidences/$name"; done &lt; sha256sum.txt
sha256sum -c sha256sum.txt
jq -r .quote quote.json | grep -c "$(sha256sum sha256sum.txt | cut -c1-64)"</pre>
</body></html>
`))
