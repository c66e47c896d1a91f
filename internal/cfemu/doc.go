// Package cfemu emulates the part of the Cloudflare API v4 that
// github.com/libdns/cloudflare v0.2.2 calls, so that tests and `ingress --dev`
// can drive the real Cloudflare provider against loopback. It is an emulator
// of those endpoints, not the real API: behaviour outside them, and error codes
// for malformed requests, are approximations.
//
// Emulated: GET /zones (name filter, pagination, result_info always present),
// GET /zones/{id}, GET/POST /zones/{id}/dns_records (type, name, content and
// match filters, pagination, ordering), GET/PUT/PATCH/DELETE
// /zones/{id}/dns_records/{id}, and GET /user/tokens/verify, all in
// Cloudflare's {"success","errors","messages","result","result_info"}
// envelope. Bearer-token auth with Cloudflare's error bodies (9109 "Invalid
// access token" for a wrong token, 10000 "Authentication error" for a zone
// outside a token's scope), record conflicts (81053, 81054, 81058) and content
// stored as Cloudflare stores it: names are FQDNs without the trailing dot,
// TXT content keeps the quotes the client sent, CAA carries structured data
// and "0 issue \"...\"" content, MX a priority.
//
// Records live in a *dnsserver.Server: every zone it serves is a Cloudflare
// zone, and a write through the API is answerable over DNS at once. Start with
// New and hand the provider Emulator.HTTPClient, whose transport sends every
// request for api.cloudflare.com to the emulator (libdns/cloudflare's base URL
// is a constant). SetFault injects errors and hangs; Requests lists what was
// called.
package cfemu
