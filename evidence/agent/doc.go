// Package agent is the TEE's client of the dstack guest agent: the app's
// identity (Info), TDX quotes over given report_data (an evidence.Quoter),
// and KMS-derived keys, among them the ACME account key every instance of
// the app derives alike (KMSKeySource). Only the daemon links it; verifiers
// need package evidence alone.
//
// Start with New, which finds the agent's socket (or the simulator's).
package agent
