// Package report defines the JSON document `verifycli --json` prints: one
// Report per run, holding every check of the numbered checklist with its
// status and the values compared.
//
// The schema is stable: fields are only ever added, never renamed, removed or
// given another meaning, and SchemaVersion changes only if that promise has to
// be broken. Consumers should ignore fields they do not know. Start with
// Report; testdata/bundle-report.golden.json in verifycli shows a full
// document.
package report
