// Package agentsim is a stand-in for the dstack guest agent, for tests and
// for running tee-ingress on a laptop (`ingress --dev`, cmd/dstack-sim).
//
// It speaks the agent's wire format over HTTP on a unix socket: POST /Info,
// /GetQuote, /GetKey, /GetTlsKey, /EmitEvent and /Version with JSON bodies
// and bytes as lowercase hex, plus the legacy tappd
// /prpc/Tappd.RawQuote. Its quotes have the real TDX v4 layout and are signed
// through a PCK chain whose certificates carry Intel's names but chain to a
// simulator root CA generated per Simulator: go-tdx-guest's verify.TdxQuote
// accepts them only when given Simulator.Roots, and rejects them under
// Intel's root. The event log replays to the quoted RTMRs, in the full form
// of older agents or the stripped form of dstack 0.5.6 and later.
//
// Nothing here is confidential or attested: the simulator's keys are derived
// from Config.Seed (random when zero) and GetKey's from a published constant.
//
// Start with Config and New, then Simulator.Serve.
package agentsim
