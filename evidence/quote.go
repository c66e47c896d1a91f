package evidence

import "context"

// Quote is one GetQuote response of the guest agent.
type Quote struct {
	// Raw is the agent's JSON response exactly as received; it is published
	// verbatim as quote.json.
	Raw []byte
	// Quote is the decoded TDX quote.
	Quote []byte
	// EventLog is the event log as the agent sent it: a JSON array encoded as a string.
	EventLog string
	// ReportData is the 64-byte report_data the agent put in the quote.
	ReportData []byte
	// VMConfig is passed through unchanged.
	VMConfig string
}

// Quoter returns a TDX quote whose report_data is reportData.
// The guest-agent client and the simulator implement it.
type Quoter interface {
	Quote(ctx context.Context, reportData [64]byte) (*Quote, error)
}
