package evidence

import (
	"context"
	"testing"
)

// BenchmarkBuildBundle: validate inputs, hash, and get a signed quote from
// the simulator in-process (the guest-agent client's own cost is in
// package agent's benchmarks and tests).
func BenchmarkBuildBundle(b *testing.B) {
	q := simQuoter{newSim(b, true)}
	in := testInput(b, newTestPKI(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildBundle(context.Background(), q, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildBundleNoQuote isolates our own work: the unsigned quoter
// answers from memory.
func BenchmarkBuildBundleNoQuote(b *testing.B) {
	q := newUnsignedQuoter(b)
	in := testInput(b, newTestPKI(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildBundle(context.Background(), q, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyBundle: full verification of a bundle whose quote is a
// real Intel-signed fixture (PCK chain, QE report and quote signatures,
// RTMR replay). The fixture's report_data binds nothing of ours, so that one
// check fails; the work is the same.
func BenchmarkVerifyBundle(b *testing.B) {
	q := newUnsignedQuoter(b)
	bundle, err := BuildBundle(context.Background(), q, testInput(b, newTestPKI(b)))
	if err != nil {
		b.Fatal(err)
	}
	files := bundle.Files()
	files[QuoteFile] = readFixture(b, fixtureStripped)
	b.ReportAllocs()
	for b.Loop() {
		pb, err := ParseBundle(files)
		if err != nil {
			b.Fatal(err)
		}
		cs := VerifyBundle(pb, VerifyOptions{})
		if c := checkByName(b, cs, CheckQuoteSignature); c.Status != Pass {
			b.Fatal(c)
		}
	}
}

// BenchmarkVerifyQuote: the Intel-signed fixture alone.
func BenchmarkVerifyQuote(b *testing.B) {
	raw := readFixture(b, fixtureStripped)
	b.ReportAllocs()
	for b.Loop() {
		if cs := VerifyQuote(raw, VerifyOptions{}); Failed(cs, false) {
			b.Fatal(failedNames(cs))
		}
	}
}
