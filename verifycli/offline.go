package main

import (
	"context"
	"fmt"
	"io"
	"os"

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

// maxQuoteFile bounds a quote file; real ones are tens of kilobytes.
const maxQuoteFile = 8 << 20

// runQuote verifies one GetQuote response, offline; "-" reads it from
// standard input.
func runQuote(_ context.Context, o *options, file string) (*result, error) {
	var b []byte
	var err error
	if file == "-" {
		file = "standard input"
		if b, err = io.ReadAll(io.LimitReader(o.stdin, maxQuoteFile+1)); err == nil && len(b) > maxQuoteFile {
			err = fmt.Errorf("standard input is over %d bytes", maxQuoteFile)
		}
	} else {
		b, err = readLimited(file, maxQuoteFile)
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
