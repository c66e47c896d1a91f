package main

import (
	"fmt"
	"strings"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// Short names for evidence's types, which every command builds.
type checkT = evidence.Check

const (
	pass = evidence.Pass
	fail = evidence.Fail
	warn = evidence.Warn
	skip = evidence.Skip
)

// Names of the checks verifycli adds to evidence's. Stable: scripts and the
// JSON report rely on them.
const (
	checkTLSConnect       = "tls.connect"             // the handshake; Got is the served leaf's SHA-256
	checkTLSChain         = "tls.chain"               // the served chain is valid for the name (WebPKI + --ca-file)
	checkTLSPinned        = "tls.pinned"              // every connection presented the first one's certificate
	checkTLSLeafBundle    = "tls.leaf_in_bundle"      // the served leaf is the bundle's certificate for the name
	checkLiveQuote        = "live.quote"              // a live quote was offered for the nonce
	checkCAA              = "dns.caa"                 // the CAA set pins the account and methods
	checkCTQuery          = "ct.query"                // the CT API answered
	checkCTCertificates   = "ct.certificates"         // every unexpired certificate in CT is accounted for
	checkAttestationGet   = "attestation.nonce"       // /attestation answered for a fresh nonce
	checkIdentityCompared = "identity.compared"       // --strict: some identity value matched an expected one
	checkAcmeInfo         = "gateway.acme_info"       // /.dstack/acme-info parses
	checkKeyQuote         = "gateway.key_quote"       // ":<n>": a quoted key's quote binds it and verifies
	checkKeyAttestation   = "gateway.key_attestation" // ":<n>": a key's dstack attestation, when it has a quote too
	checkServedKey        = "gateway.served_key"      // the served key is a quoted key
	checkHistKeys         = "gateway.hist_keys"       // older format: every hist_key has a quote
	checkActiveCert       = "gateway.active_cert"
	checkAppInfo          = "gateway.app_info" // /.dstack/app-info against the quoted identity
)

// Prefixes of the checks of a second quote.
const (
	prefixLive    = "live."
	prefixAccount = "account."
	prefixRATLS   = "ratls."
)

// prefixed renames checks with a prefix.
func prefixed(prefix string, cs []checkT) []checkT {
	out := make([]checkT, len(cs))
	for i, c := range cs {
		c.Name = prefix + c.Name
		out[i] = c
	}
	return out
}

// identityOf collects the identity values of checks named prefix +
// identity.*, when the quote was trusted (RTMR3 replayed and signature valid).
func identityOf(prefix string, cs []checkT) *report.Identity {
	byName := map[string]checkT{}
	for _, c := range cs {
		byName[c.Name] = c
	}
	if byName[prefix+evidence.CheckQuoteSignature].Status != pass || byName[prefix+evidence.CheckRTMR+"3"].Status != pass {
		return nil
	}
	return &report.Identity{
		AppID:       byName[prefix+evidence.CheckAppID].Got,
		ComposeHash: byName[prefix+evidence.CheckComposeHash].Got,
		InstanceID:  byName[prefix+evidence.CheckInstanceID].Got,
		KeyProvider: byName[prefix+evidence.CheckKeyProvider].Got,
		OSImageHash: byName[prefix+evidence.CheckOSImageHash].Got,
	}
}

// worst summarises checks into one status: fail over warn over skip over pass.
func worst(cs []checkT) evidence.Status {
	rank := map[evidence.Status]int{pass: 0, evidence.Info: 0, skip: 1, warn: 2, fail: 3}
	st := pass
	for _, c := range cs {
		if rank[c.Status] > rank[st] {
			st = c.Status
		}
	}
	return st
}

// failedOf names the failed checks, with the first one's detail.
func failedOf(cs []checkT) string {
	var names []string
	first := ""
	for _, c := range cs {
		if c.Status == fail {
			names = append(names, c.Name)
			if first == "" {
				first = c.Detail
			}
		}
	}
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("failed: %s (%s)", strings.Join(names, ", "), first)
}
