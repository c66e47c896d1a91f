package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// runBundle verifies an evidence folder on disk, offline.
func runBundle(_ context.Context, o *options, dir string) (*result, error) {
	pb, err := evidence.LoadBundleDir(dir)
	if err != nil {
		return nil, &cliError{err: err, hint: "give the evidence folder (EVIDENCE_DIR, default /evidences) holding sha256sum.txt and quote.json"}
	}
	cs := evidence.VerifyBundle(pb, o.verifyOptions())
	return &result{checks: cs, identity: identityOf("", cs), accountURI: pb.AccountURI(), layout: pb.Layout()}, nil
}

// runWebhook verifies a DNS webhook request body as its receiver must.
func runWebhook(_ context.Context, o *options, file string) (*result, error) {
	if o.tokenFile == "" {
		return nil, usageErr("give --token-file FILE holding the DNS_WEBHOOK_TOKEN", "webhook needs --token-file: the HMAC cannot be checked without the token")
	}
	token, err := readLimited(o.tokenFile, 4096)
	if err != nil {
		return nil, &cliError{err: fmt.Errorf("reading the token: %w", err), hint: "give the file holding DNS_WEBHOOK_TOKEN"}
	}
	body, err := o.readInput(file)
	if err != nil {
		return nil, &cliError{err: fmt.Errorf("reading the request: %w", err), hint: "give the webhook's request body saved as a file, or - for standard input"}
	}
	vo := o.verifyOptions()
	p, cs := evidence.VerifyWebhook(body, evidence.WebhookOptions{Token: strings.TrimSpace(string(token)), MaxAge: o.maxAge, Quote: vo})
	res := &result{checks: cs, identity: identityOf("", cs)}
	if p != nil {
		for _, r := range p.Records {
			res.checks = append(res.checks, evidence.Check{Name: "webhook.record", Status: evidence.Info, Got: r.String(), Detail: r.Note})
		}
	}
	return res, nil
}

// readInput reads file, or standard input for "-", up to maxQuoteFile.
func (o *options) readInput(file string) ([]byte, error) {
	if file != "-" {
		return readLimited(file, maxQuoteFile)
	}
	b, err := io.ReadAll(io.LimitReader(o.stdin, maxQuoteFile+1))
	if err == nil && len(b) > maxQuoteFile {
		err = fmt.Errorf("standard input is over %d bytes", maxQuoteFile)
	}
	return b, err
}

// maxQuoteFile bounds a quote file; real ones are tens of kilobytes.
const maxQuoteFile = 8 << 20

// runQuote verifies one GetQuote response, offline; "-" reads it from
// standard input.
func runQuote(_ context.Context, o *options, file string) (*result, error) {
	b, err := o.readInput(file)
	if file == "-" {
		file = "standard input"
	}
	if err != nil {
		return nil, &cliError{err: fmt.Errorf("reading quote: %w", err), hint: "give a GetQuote response saved as a file, such as quote.json"}
	}
	if _, err := evidence.ParseQuoteJSON(b); err != nil {
		return nil, &cliError{err: fmt.Errorf("%s: %w", file, err), hint: `give the guest agent's GetQuote response: {"quote": "<hex>", "event_log": "<JSON array as a string>", ...}`}
	}
	vo := o.verifyOptions()
	vo.ReportData = o.reportData
	cs := evidence.VerifyQuote(b, vo)
	return &result{checks: cs, identity: identityOf("", cs)}, nil
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", name, limit)
	}
	return b, nil
}
