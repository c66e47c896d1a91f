package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// runTLS verifies the attested self-signed mode: the attestation fetched
// over a connection binds that connection's certificate and a fresh nonce.
func runTLS(ctx context.Context, o *options, arg string) (*result, error) {
	u, err := parseTargetURL(arg, "tls")
	if err != nil {
		return nil, err
	}
	t := newTarget(u, o.connect, o.timeout)
	defer t.close()
	if err := t.connect(ctx); err != nil {
		return nil, err
	}
	var nonce [32]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("generating a nonce: %w", err)
	}
	cs := []checkT{t.tlsConnectCheck()}
	vo := o.verifyOptions()
	res := &result{certificate: certificateReport(t.leaf())}
	raTLS := evidence.IsRATLS(t.leaf())
	if raTLS {
		// dstack's RA-TLS: the evidence is in the certificate itself.
		rcs := evidence.VerifyRATLS(t.leaf(), vo)
		cs = append(cs, rcs[0])
		cs = append(cs, prefixed(prefixRATLS, rcs[1:])...)
		res.identity = identityOf(prefixRATLS, cs)
	}
	path := evidence.AttestationPath + "?nonce=" + hex.EncodeToString(nonce[:])
	body, status, _, err := t.get(ctx, path, "")
	if err != nil {
		return nil, err
	}
	nc := checkT{Name: checkAttestationGet, Want: hex.EncodeToString(nonce[:])}
	switch {
	case status == http.StatusNotFound && raTLS:
		// An RA-TLS server of dstack's own serves no /attestation: the
		// handshake carried everything, bound to the certificate's key.
		res.checks = cs
		return res, nil
	}
	switch status {
	case http.StatusOK:
		nc.Status, nc.Got, nc.Detail = pass, nc.Want, "the server answered an attestation for a fresh nonce"
		vo.Nonce = &nonce
		res.nonce = nc.Want
	case http.StatusNotFound:
		return nil, &cliError{err: fmt.Errorf("fetching %s: HTTP status 404", t.url(evidence.AttestationPath)),
			hint: "the server serves no /attestation: it is not running tee-ingress with CERT_SOURCE=self-signed"}
	default:
		// Without a nonce, the attestation may be an old one replayed.
		first := fmt.Sprintf("HTTP %d: %s", status, firstLine(body))
		body, status, _, err = t.get(ctx, evidence.AttestationPath, "")
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			return nil, &cliError{err: fmt.Errorf("fetching %s: HTTP status %d: %s", t.url(evidence.AttestationPath), status, firstLine(body)),
				hint: "the server's attestation endpoint is failing; retry later"}
		}
		nc.Status, nc.Detail = warn, "the server refused a nonce ("+first+"); checked the attestation without one, which may be replayed"
		nc.Hint = "tee-ingress answers /attestation?nonce=<64 hex>; a rate-limited or older server may not"
	}
	cs = append(cs, nc)
	cs = append(cs, evidence.VerifyAttestation(body, t.leaf().Raw, vo)...)
	res.checks = cs
	if id := identityOf("", cs); id != nil || !raTLS {
		res.identity = id
	}
	return res, nil
}
